"""``photoveil demo``: argument errors are clear; the full run (slow) meets its claims."""
from __future__ import annotations

import json

import pytest

from photoveil.cli import main as cli


@pytest.mark.parametrize("argv, message", [
    (["--methods", "pmt,bogus"], "bogus not accepted"),
    (["--methods", ""], "(empty) not accepted"),
    (["--model", "no-such-net"], "no-such-net"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert cli(["demo", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_demo_end_to_end(face_models_dir, tmp_path, capsys):
    assert cli(["demo", "--methods", "pmt", "--out", str(tmp_path), "--json"]) == 0
    records = json.loads((tmp_path / "demo.json").read_text())
    by = {(r["method"], r["upload"]): r for r in records}
    clean, pmt = by[("none", "image")], by[("pmt", "image")]
    n = clean["n"]
    assert clean["authorized_correct"] == n and pmt["authorized_correct"] == n
    assert by[("pmt", "features")]["authorized_correct"] == n
    assert pmt["ssim"] < 0.2 and sum(pmt["unauthorized_correct"].values()) < sum(clean["unauthorized_correct"].values())
