"""U-Net perturbation generator: paper size, any input size, clamp, export, checkpoint, protector."""
from __future__ import annotations

import pytest
import torch

from photoveil.client.protect import get_protector
from photoveil.client.protect.generator import GeneratorConfig, GeneratorProtector
from photoveil.errors import InvalidInput, NotFound
from photoveil.nets.unet import UNetGenerator, count_parameters, load_generator, save_generator


def test_paper_parameter_count():
    # Ye et al. Sec. 4.3.1: 7.766 M parameters, 31 MB (fp32).
    net = UNetGenerator(in_channels=3, width=1.0)
    n = count_parameters(net)
    assert n == 7_766_051
    assert round(n * 4 / 1e6) == 31


def test_width_scales_parameters():
    assert count_parameters(UNetGenerator(1, width=0.25)) < count_parameters(UNetGenerator(1, width=0.5)) / 3


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (37, 37), (112, 112), (5, 70), (1, 1)])
def test_any_input_size_keeps_shape_and_range(size):
    torch.manual_seed(0)
    net = UNetGenerator(in_channels=3, width=0.125).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out, delta = net(x), net.perturbation(x)
    assert out.shape == x.shape and delta.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, (x + delta).clamp(0, 1))


def test_full_width_runs_at_face_size():
    net = UNetGenerator(in_channels=3).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 112, 112)).shape == (1, 3, 112, 112)


def test_single_channel_perturbation_broadcasts():
    net = UNetGenerator(in_channels=3, out_channels=1, width=0.125).eval()
    x = torch.rand(1, 3, 16, 16)
    assert net.perturbation(x).shape == (1, 1, 16, 16)
    assert net(x).shape == x.shape


@pytest.mark.parametrize("kwargs", [dict(width=0), dict(width=-1), dict(depth=0), dict(depth=7),
                                    dict(in_channels=0), dict(in_channels=3, out_channels=2)])
def test_constructor_validation(kwargs):
    with pytest.raises(ValueError):
        UNetGenerator(**kwargs)


def test_torch_export_matches_eager():
    torch.manual_seed(0)
    net = UNetGenerator(in_channels=3, width=0.125).eval()
    x = torch.rand(1, 3, 37, 37)
    ep = torch.export.export(net, (x,))
    torch.testing.assert_close(ep.module()(x), net(x))


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = UNetGenerator(in_channels=1, width=0.125).eval()
    path = tmp_path / "g.pt"
    save_generator(path, net, config={"target": "resnet18"}, metrics={"ssim": 0.2})
    raw = torch.load(path, weights_only=True)  # loadable without unpickling code
    assert raw["unet"] == net.config()
    loaded, meta = load_generator(path)
    assert meta["config"]["target"] == "resnet18"
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), net(x))


def test_load_errors(tmp_path):
    with pytest.raises(NotFound):
        load_generator(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"something": 1}, bad)
    with pytest.raises(InvalidInput, match="not a photoveil generator"):
        load_generator(bad)
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(InvalidInput):
        load_generator(tmp_path / "junk.pt")


def test_generator_protector(tmp_path):
    torch.manual_seed(0)
    net = UNetGenerator(in_channels=1, width=0.125).eval()
    save_generator(tmp_path / "g.pt", net)
    assert get_protector("generator") is GeneratorProtector
    p = GeneratorProtector(GeneratorConfig(checkpoint=str(tmp_path / "g.pt"), batch_size=3))
    assert p.in_channels == 1
    x = torch.rand(7, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(p.protect(x), net(x))
    half = GeneratorProtector.from_preset("low", checkpoint=str(tmp_path / "g.pt"))
    with torch.no_grad():
        torch.testing.assert_close(half.protect(x), (x + 0.5 * net.perturbation(x)).clamp(0, 1))
    with pytest.raises(InvalidInput, match=r"\[N, 1, H, W\]"):
        p.protect(torch.rand(1, 3, 32, 32))
    with pytest.raises(NotFound, match="shipped"):
        GeneratorProtector(GeneratorConfig(checkpoint="no-such-generator"))
    with pytest.raises(ValueError, match="strength"):
        GeneratorConfig(strength=1.5)
