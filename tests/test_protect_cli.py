"""`photoveil protect` on files and folders: outputs, per-file failures, exit codes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photoveil.cli import main

FACES = Path(__file__).parent / "fixtures" / "lfw_small" / "images"


@pytest.fixture()
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    face = sorted(FACES.glob("*/*.jpg"))[0]
    shutil.copy(face, folder / "face.jpg")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "grey.png")  # no face
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return folder


def test_bad_files_are_reported_and_the_rest_protected(face_models_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["protect", str(inputs), "--out", str(out), "--method", "pmt", "--steps", "2", "--features"])
    err = capsys.readouterr().err
    assert rc == 1  # some photos failed
    assert "grey.png" in err and "no face" in err.lower()
    assert "broken.jpg" in err
    png = np.asarray(Image.open(out / "face.png"))
    assert png.shape == (150, 150, 3)  # aligned to faceapi-resnet34's input
    feats = np.load(out / "face.npy")
    assert feats.ndim == 3 and np.isfinite(feats).all()
    meta = json.loads((out / "features.json").read_text())
    assert meta["model"] == "faceapi-resnet34" and meta["split"] == "block2" and meta["shape"] == list(feats.shape)
    assert not (out / "grey.png").exists()


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["protect", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["protect", "x.jpg", "--out", "o", "--method", "blur"])
    assert exc.value.code == 2
