"""``photoveil loadtest`` on the tiny classifier: bounded, records every field, no errors."""
from __future__ import annotations

import json

import pytest

from photoveil.cli import main as cli
from photoveil.loadtest import run_loadtest, speedups


def test_loadtest_records_and_bounds():
    records = run_loadtest("tiny:tiny-cls", clients=[4], batching=[True, False], max_requests=60, max_seconds=10,
                           log=lambda *_: None)
    assert [(r["batching"], r["mode"]) for r in records] == [(True, "closed"), (True, "open"),
                                                              (False, "closed"), (False, "open")]
    for r in records:
        assert r["errors"] == 0 and 0 < r["requests"] <= 60
        assert r["throughput_rps"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
        assert {"batching", "clients", "requests", "errors", "throughput_rps", "p50_ms", "p99_ms"} <= set(r)
    assert set(speedups(records)) == {4}


@pytest.mark.parametrize("argv, message", [
    (["--model", "vgg13_bn"], "SOURCE:NAME"),
    (["--clients", "x"], "comma list of integers"),
    (["--batching", "maybe"], "on, off"),
    (["--requests", "0"], "--requests"),
])
def test_bad_arguments(argv, message, capsys):
    assert cli(["loadtest", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_json(capsys, tmp_path):
    assert cli(["loadtest", "--model", "tiny:tiny-cls", "--clients", "2", "--batching", "on", "--requests", "20",
                "--no-half-load", "--json", "--out", str(tmp_path)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert len(lines) == 1 and lines[0]["batching"] is True and lines[0]["requests"] == 20
    assert (tmp_path / "loadtest.json").is_file() and (tmp_path / "loadtest.md").is_file()
