"""Golden vectors (export/golden.py): written at export, reproduced on the Python ExecuTorch
runtime for every program kind; a changed vector or another program is caught."""
from __future__ import annotations

import json

import pytest
import torch

from photoveil.client.protect.fmd import FMDConfig
from photoveil.client.protect.pmt import PMTConfig
from photoveil.errors import IntegrityError
from photoveil.export import programs as P
from photoveil.export.golden import GOLDEN_FILE, check_golden, golden_dir_for, read_golden, write_golden
from photoveil.export.lowering import LowerOptions, export_program
from tests.toys import face_front as toy_shallow
from tests.toys import gallery_classifier as toy_gallery


def _pmt(out):
    prog = P.pmt_step_program([toy_shallow()], PMTConfig(steps=20, step_size=1.0), size=32)
    export_program(prog.module, prog.inputs, prog.options, out)


def _fmd(out):
    prog = P.fmd_step_program(toy_gallery(), FMDConfig(steps=10), size=32, model_id="toy", split="block1")
    export_program(prog.module, prog.inputs, prog.options, out)


def _generator(out):
    from photoveil.nets.unet import UNetGenerator

    torch.manual_seed(0)
    prog = P.generator_program(UNetGenerator(in_channels=3, width=0.25).eval(), size=32)
    export_program(prog.module, prog.inputs, prog.options, out)


def _shallow(out):
    mod = P.UploadFeatures(toy_shallow()).eval()
    export_program(mod, (torch.rand(1, 3, 32, 32),), LowerOptions(kind="shallow", model_id="toy", split="block1"), out)


KINDS = {"pmt-step": _pmt, "fmd-step": _fmd, "generator": _generator, "shallow": _shallow}
EXPECTED_CHECKS = {"pmt-step": {"one_step", "full_run", "features"}, "fmd-step": {"prepare", "one_step", "full_run"},
                   "generator": {"forward"}, "shallow": {"forward"}}


@pytest.fixture(scope="module")
def shallow_golden(tmp_path_factory):
    art = tmp_path_factory.mktemp("golden") / "shallow"
    _shallow(art)
    return art, write_golden(art).parent


def test_golden_is_written_beside_the_artifact_and_reproduces(shallow_golden):
    art, golden = shallow_golden
    assert golden == golden_dir_for(art) and not (art / GOLDEN_FILE).exists()  # beside, not inside
    doc, t = read_golden(golden)
    assert t["x"].shape == (1, 3, 32, 32) and 0 < t["x"].min() < t["x"].max() <= 1
    assert torch.equal(t["x"] * 255, (t["x"] * 255).round())  # the 8-bit PNG's values
    assert set(doc["requests"]) == {"identify_image", "identify_features"}
    records = check_golden(golden, art)
    assert {r["check"] for r in records} == EXPECTED_CHECKS["shallow"] and all(r["ok"] for r in records)


def test_changed_vector_or_other_program_is_caught(shallow_golden, tmp_path):
    import hashlib
    import shutil

    art, golden = shallow_golden
    copy = tmp_path / "g"
    shutil.copytree(golden, copy)
    doc = json.loads((copy / GOLDEN_FILE).read_text())
    # an expected output the program does not produce (its sha256 updated to match)
    out = read_golden(copy)[1]["output"]
    (copy / "output.bin").write_bytes((out + 1e-3).numpy().astype("<f4").tobytes())
    doc["tensors"]["output"]["sha256"] = hashlib.sha256((copy / "output.bin").read_bytes()).hexdigest()
    (copy / GOLDEN_FILE).write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="forward/output"):
        check_golden(copy, art)
    doc["artifact"]["sha256"] = "0" * 64
    (copy / GOLDEN_FILE).write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="written for program sha256"):
        check_golden(copy, art)
    # a file edited without its sha256
    (copy / "x.bin").write_bytes(b"\0" * (copy / "x.bin").stat().st_size)
    with pytest.raises(IntegrityError, match="x.bin does not match its sha256"):
        read_golden(copy)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_golden_reproduces_for_every_program_kind(kind, tmp_path):
    KINDS[kind](tmp_path / kind)
    golden = write_golden(tmp_path / kind, steps=3).parent
    doc, t = read_golden(golden)
    if kind.endswith("-step"):  # the loop is recorded: one step differs from the start, N steps from one
        carry = next(c["loop"]["carry"] for c in doc["checks"] if "loop" in c)
        assert not torch.equal(t[carry], t[carry[:-1] + "1"]) and not torch.equal(t[carry[:-1] + "1"], t[carry[:-1] + "N"])
    if kind == "pmt-step":
        assert t["noise"].shape == (3, 1, 3, 32, 32) and t["theta"].shape == (3, 1, 2, 3)
    records = check_golden(golden, tmp_path / kind)
    assert {r["check"] for r in records} == EXPECTED_CHECKS[kind] and all(r["ok"] for r in records)


@pytest.mark.parametrize("argv, message", [
    (["export", "pmt-step", "--out", "o", "--golden", "o"], "--golden must name a folder beside the artifact"),
    (["export", "pmt-step", "--out", "o", "--golden", "--golden-steps", "0"], "--golden-steps must be in 1..1000"),
])
def test_export_golden_flags_are_checked_before_any_model_loads(argv, message, capsys, tmp_path, monkeypatch):
    from photoveil.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "o").exists()
