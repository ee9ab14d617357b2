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
    assert n == 20 and pmt["preset"] == "high"
    assert clean["authorized_correct"] >= 0.95 * n and pmt["authorized_correct"] >= 0.85 * n
    assert by[("pmt", "features")]["authorized_correct"] >= 0.85 * n
    assert pmt["ssim"] < 0.2 and sum(pmt["unauthorized_correct"].values()) < sum(clean["unauthorized_correct"].values())
    assert clean["readable_ssim"] > 0.99 and clean["readable_ssim_blur"] > 0.99 and set(pmt["readable_unauthorized_correct"]) == set(pmt["unauthorized_correct"])
    assert (tmp_path / "contact_sheet.png").stat().st_size > 10_000


def test_bad_faces_folder_exits_2_before_models_load(tmp_path, capsys, monkeypatch):
    import photoveil.demo as demo

    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: pytest.fail("models loaded"))
    assert cli(["demo", "--faces", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "one").mkdir()
    for i in range(3):
        (tmp_path / "one" / f"one_{i}.jpg").write_bytes(b"")
    assert cli(["demo", "--faces", str(tmp_path)]) == 2
    assert "needs >= 2 identity folders" in capsys.readouterr().err


def test_bundled_demo_fixture_has_20_identities():
    from photoveil.demo import ENROLLED_PER_ID, faces_dir

    root = faces_dir()
    folders = [p for p in root.iterdir() if p.is_dir()]
    assert len(folders) == 20
    assert all(len(list(p.glob("*.jpg"))) > ENROLLED_PER_ID for p in folders)
    assert sum(f.stat().st_size for f in root.rglob("*.jpg")) < 1_000_000  # small


def test_presets_and_contact_sheet(tmp_path):
    import torch
    from PIL import Image

    from photoveil.demo import RECOMMENDED_PRESETS, contact_sheet, presets_for

    assert presets_for(["pmt", "fmd", "generator"]) == RECOMMENDED_PRESETS
    assert presets_for(["pmt"], "low") == {"pmt": "low"}
    g = torch.Generator().manual_seed(0)
    cols = {"original": torch.rand(8, 3, 150, 150, generator=g), "pmt": torch.rand(8, 3, 150, 150, generator=g)}
    path = contact_sheet(tmp_path / "docs" / "sheet.png", [f"id{i}" for i in range(8)], cols, rows=3, tile=64)
    img = Image.open(path)
    assert img.size == (3 * 2 * 64 + 2 * 8, 32 + 3 * 64)


def test_chance_p_value_against_a_direct_binomial_sum():
    from photoveil.errors import InvalidInput
    from photoveil.evaluation.metrics import above_chance_p

    assert above_chance_p(0, 20, 0.05) == 1.0
    assert above_chance_p(2, 20, 0.05) == pytest.approx(1 - 0.95 ** 20 - 20 * 0.05 * 0.95 ** 19, rel=1e-9)
    assert above_chance_p(4, 20, 0.05) == pytest.approx(0.0159, abs=1e-4)
    assert above_chance_p(20, 20, 0.5) == pytest.approx(0.5 ** 20)
    with pytest.raises(InvalidInput, match="0 <= k <= n"):
        above_chance_p(21, 20, 0.05)


def test_table_marks_only_counts_that_guessing_explains():
    from photoveil.demo import table

    row = {"method": "pmt", "preset": "high", "upload": "image", "n": 20, "authorized_correct": 19,
           "unauthorized_correct": {"faceres": 2, "mobileface": 4},
           "readable_unauthorized_correct": {"faceres": 0, "mobileface": 6},
           "ssim": 0.01, "readable_ssim": 0.15, "readable_ssim_blur": 0.3, "device_ms_p50": 200.0,
           "bytes_per_request": 1000}
    line = table([row]).splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:8] == ["19/20", "2/20 (chance)", "4/20", "0/20 (chance)", "6/20"]
