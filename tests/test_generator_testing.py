"""``photoveil generator test``: the shipped Fashion-MNIST generator on held-out test
images, eager and as its exported program."""
from __future__ import annotations

from pathlib import Path

import pytest

from photoveil.errors import InvalidInput
from photoveil.generator_training.testing import format_record, run_generator_test as run_test

HAVE_FASHION = Path("/usr/share/datasets/fashion-mnist").is_dir()


@pytest.mark.skipif(not HAVE_FASHION, reason="Debian package dataset-fashion-mnist not installed")
def test_shipped_generator_protects_and_its_program_agrees(tmp_path):
    from photoveil.export import programs as P
    from photoveil.export.lowering import export_program
    from photoveil.nets.unet import load_generator
    from photoveil.client.protect.generator import GeneratorProtector

    net, _ = load_generator(GeneratorProtector._resolve("fashion-mnist-vgg13_bn"))
    prog = P.generator_program(net, size=32)
    export_program(prog.module, prog.inputs, prog.options, tmp_path)
    rec = run_test("fashion-mnist-vgg13_bn", artifact=tmp_path, images=200)
    eager = rec["eager"]
    assert (rec["target"], rec["aux"], rec["images"]) == ("vgg13_bn", "mobilenet_v2", 200)
    # Protection: the target still classifies, the auxiliary model no longer does.
    assert eager["clean_aux_accuracy"] > 0.8 and eager["aux_accuracy"] < 0.3
    assert eager["target_accuracy"] > 0.7
    # fp32 program vs eager: the same figures to within one image in 200.
    assert all(abs(d) <= 0.5 for d in rec["delta_points"].values()), rec["delta_points"]
    assert "delta (points)" in format_record(rec)


def test_face_generators_are_pointed_to_evaluate():
    with pytest.raises(InvalidInput, match="evaluate --method generator"):
        run_test("face")
