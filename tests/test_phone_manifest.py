"""The manifest carries what a phone needs to prepare a face the way the host does:
alignment template points at the program's size, channel order, normalisation; manifests
written before these fields still read."""
from __future__ import annotations

import json

import numpy as np
import torch

from photoveil.artifact import Manifest
from photoveil.export.lowering import ALIGNMENT_LANDMARKS, alignment_spec, build_manifest
from photoveil.facemodels.align import landmark_matrix, template


def test_alignment_spec_gives_the_hosts_template_points_at_the_program_size():
    spec = alignment_spec({"template": "dlib", "zoom": 1.0}, torch.zeros(1, 3, 150, 150))
    assert spec["size"] == [150, 150] and spec["landmarks"] == list(ALIGNMENT_LANDMARKS)
    np.testing.assert_allclose(spec["points"], template(150, 1.0, "dlib"), atol=1e-4)
    # a phone fitting its detected landmarks to these points gets the host's crop matrix
    detected = np.array([[80.0, 100.0], [140.0, 96.0], [112.0, 130.0], [113.0, 160.0]])
    from photoveil.facemodels.align import umeyama

    np.testing.assert_allclose(umeyama(detected, np.array(spec["points"])),
                               landmark_matrix(detected, 150, 1.0, "dlib"), atol=1e-3)
    assert alignment_spec(None, torch.zeros(1, 3, 32, 32)) is None
    assert alignment_spec({"template": "arcface", "zoom": 1.0}, torch.zeros(1, 3, 32, 48)) == \
        {"template": "arcface", "zoom": 1.0}  # not square: the templates are square crops


def test_manifest_fields_written_and_old_manifests_still_read(tmp_path):
    from photoveil.export.lowering import Lowered, LowerOptions

    pte = tmp_path / "p.pte"
    pte.write_bytes(b"program")
    for channels, order in ((3, "RGB"), (1, "L")):
        m = build_manifest(LowerOptions(kind="shallow", alignment={"template": "arcface", "zoom": 1.0}),
                           (torch.zeros(1, channels, 112, 112),), [torch.zeros(1, 8)], pte, Lowered(b"", [], {}))
        data = json.loads(m.to_json())
        assert data["channel_order"] == order and data["normalisation"]["range"] == [0.0, 1.0]
        assert len(data["alignment"]["points"]) == 4 and data["alignment"]["size"] == [112, 112]
    old = {"format": "photoveil-artifact/2", "kind": "shallow", "alignment": {"template": "dlib", "zoom": 1.0}}
    m = Manifest.from_dict(old)
    assert m.channel_order == "RGB" and m.alignment == {"template": "dlib", "zoom": 1.0}
