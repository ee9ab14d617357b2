"""The protector factory and the CLI flags made from the config dataclasses."""
from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch

from photoveil.client.protect.base import PRESET_NAMES
from photoveil.client.protect.configs import CONFIGS
from photoveil.client.protect.factory import METHODS, build_config, build_protector
from photoveil.client.protect.flags import add_method_flags, method_overrides
from photoveil.errors import InvalidInput


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("preset", [*PRESET_NAMES, None])
def test_every_method_and_preset_builds_a_config(method, preset):
    cfg = build_config(method, preset, {"seed": 3})
    assert isinstance(cfg, CONFIGS[method]) and cfg.seed == 3


def test_overrides_win_and_bad_values_name_the_field():
    assert build_config("pmt", "high", {"steps": 7}).steps == 7
    assert build_config("pmt", "high").split == "deep"
    with pytest.raises(InvalidInput, match=r"steps must be an int in \[1, 10000\]"):
        build_config("pmt", "mid", {"steps": -5})
    with pytest.raises(InvalidInput, match="eps does not apply to method 'pmt'"):
        build_config("pmt", "mid", {"eps": 8})
    with pytest.raises(InvalidInput, match="accepted: pmt, fmd, generator"):
        build_config("blur")
    with pytest.raises(InvalidInput, match="preset"):
        build_config("fmd", "extreme")


def test_bad_settings_fail_before_any_model_loads(monkeypatch):
    from photoveil.facemodels import registry

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(registry, "load", no_load)
    with pytest.raises(InvalidInput, match="init_sigma"):
        build_protector("pmt", ["faceapi-resnet34"], "mid", {"init_sigma": -1.0})
    with pytest.raises(InvalidInput, match="needs an authorized model"):
        build_protector("fmd", [], "mid")


def test_pmt_from_ready_taps_protects_like_the_class(toy_taps):
    from photoveil.client.protect.pmt import PMTProtector

    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    built = build_protector("pmt", [toy_taps], "mid", {"steps": 3, "seed": 0})
    direct = PMTProtector([toy_taps], PMTProtector.preset_config("mid", steps=3, seed=0))
    torch.testing.assert_close(built.protect(x), direct.protect(x))


def test_flags_cover_every_field_and_refuse_other_methods_flags():
    parser = argparse.ArgumentParser()
    add_method_flags(parser, METHODS)
    for method in METHODS:
        for f in dataclasses.fields(CONFIGS[method]):
            if f.metadata.get("flag"):
                assert any(a.dest == f.name for a in parser._actions), f"no flag for {method}.{f.name}"
    args = parser.parse_args(["--steps", "50", "--eps", "8", "--layers", "stem", "block1"])
    with pytest.raises(InvalidInput, match="--layers does not apply to --method fmd"):
        method_overrides(args, "fmd", METHODS)
    args = parser.parse_args(["--steps", "50", "--layers", "stem", "block1"])
    assert method_overrides(args, "pmt", METHODS) == {"steps": 50, "layers": ("stem", "block1")}
    with pytest.raises(SystemExit):  # choices come from the dataclass
        parser.parse_args(["--init", "banana"])



@pytest.fixture
def toy_taps():
    from tests.toys import two_taps

    return two_taps()


def test_unknown_or_absent_device_is_refused():
    with pytest.raises(InvalidInput, match="'banana' is not a torch device"):
        build_config("pmt", "mid", {"device": "banana"})
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput, match="no CUDA device"):
            build_config("fmd", "mid", {"device": "cuda"})


@pytest.mark.parametrize("argv", [
    ["protect", "x.jpg", "--out", "o", "--steps", "-5"],
    ["protect", "x.jpg", "--out", "o", "--device", "banana"],
    ["protect", "x.jpg", "--out", "o", "--eps", "8"],
    ["protect", "x.jpg", "--out", "o", "--model", "gear"],
    ["evaluate", "--method", "fmd", "--init-sigma", "-1"],
    ["export", "generator", "--out", "o", "--strength", "5"],
    ["export", "pmt-step", "--out", "o", "--kernel-length", "99"],
    ["bench", "--runs", "0"],
    ["bench", "--sizes", "abc"],
    ["bench", "--threads", "0"],
    ["bench", "--programs", "protect-foo"],
    ["bench", "--protect-presets", "ultra"],
    ["bench", "--peers", "tvm"],
    ["bench", "--protect-runs", "0"],
    ["bench", "--momentum", "2"],
    ["evaluate", "--sweep", "preset=mid,ultra"],
    ["protect", "x.jpg", "--out", "o", "--momentum", "1.5"],
])
def test_cli_bad_value_exits_2_in_one_line_before_any_model_loads(argv, monkeypatch, capsys, tmp_path):
    from photoveil.cli import main
    from photoveil.facemodels import registry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"photoveil {argv[0]}: error:"), err
