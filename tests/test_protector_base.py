"""The protector base class: input validation, presets vs overrides, seeding, batching, registry."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from photoveil.client.protect import Protector, ProtectorConfig, get_protector, register_protector
from photoveil.errors import InvalidInput, NotFound


@dataclass
class NoiseConfig(ProtectorConfig):
    sigma: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.sigma <= 1:
            raise ValueError(f"sigma must be in (0, 1], got {self.sigma}")


class NoiseProtector(Protector):
    method = "test-noise"
    Config = NoiseConfig
    PRESETS = {
        "low": {"sigma": 0.05, "batch_size": 2},
        "mid": {"sigma": 0.1},
        "high": {"sigma": 0.3},
    }

    def __init__(self, config=None, tag: str = "") -> None:
        super().__init__(config)
        self.tag = tag
        self.chunk_sizes: list[int] = []

    def _protect(self, images, rng):
        self.chunk_sizes.append(len(images))
        noise = torch.randn(images.shape, generator=rng, device=images.device)
        return images + self.config.sigma * noise


register_protector(NoiseProtector)


def test_protect_keeps_shape_and_range():
    p = NoiseProtector(NoiseConfig(sigma=1.0, seed=0))
    x = torch.rand(5, 3, 17, 9)
    out = p.protect(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (torch.rand(3, 8, 8), "shape"),
        (torch.rand(1, 1, 3, 8, 8), "shape"),
        (torch.rand(2, 1, 8, 8), "channels"),
        (torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8), "dtype"),
        (torch.full((1, 3, 4, 4), float("nan")), "NaN"),
        (torch.full((1, 3, 4, 4), float("inf")), "NaN or infinite"),
        (torch.rand(1, 3, 4, 4) * 255, "values in"),
        (torch.rand(1, 3, 4, 4) - 0.5, "values in"),
        ([[0.5]], "got list"),
    ],
)
def test_validation_rejects_bad_input_and_says_what_is_accepted(bad, fragment):
    with pytest.raises(InvalidInput) as err:
        NoiseProtector().protect(bad)
    msg = str(err.value)
    assert fragment in msg
    assert "[N, 3, H, W]" in msg and "[0, 1]" in msg


def test_in_channels_per_instance():
    p = NoiseProtector()
    p.in_channels = 1
    assert p.protect(torch.rand(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    with pytest.raises(InvalidInput, match=r"\[N, 1, H, W\]"):
        p.protect(torch.rand(2, 3, 8, 8))


def test_preset_then_overrides_win():
    p = NoiseProtector.from_preset("low")
    assert p.config.sigma == 0.05 and p.config.batch_size == 2
    p = NoiseProtector.from_preset("low", sigma=0.7, tag="x")
    assert p.config.sigma == 0.7 and p.config.batch_size == 2 and p.tag == "x"
    # an override equal to the dataclass default still wins over the preset
    p = NoiseProtector.from_preset("high", sigma=0.1)
    assert p.config.sigma == 0.1


def test_unknown_preset_names_the_presets():
    with pytest.raises(ValueError, match="low, mid, high"):
        NoiseProtector.from_preset("extreme")


def test_config_validation():
    with pytest.raises(ValueError, match="sigma"):
        NoiseConfig(sigma=0)
    with pytest.raises(ValueError, match="batch_size"):
        NoiseConfig(batch_size=0)
    with pytest.raises(ValueError, match="seed"):
        NoiseConfig(seed=-1)


def test_presets_checked_at_class_definition():
    with pytest.raises(TypeError, match="unknown fields"):
        type("Bad", (NoiseProtector,), {"PRESETS": {"low": {"sigmaa": 1}, "mid": {}, "high": {}}})
    with pytest.raises(TypeError, match="keys"):
        type("Bad", (NoiseProtector,), {"PRESETS": {"low": {}}})


def test_seed_makes_output_reproducible():
    x = torch.rand(4, 3, 8, 8)
    a = NoiseProtector(NoiseConfig(seed=3)).protect(x)
    b = NoiseProtector(NoiseConfig(seed=3)).protect(x)
    c = NoiseProtector(NoiseConfig(seed=4)).protect(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batching_chunks_and_progress():
    p = NoiseProtector(NoiseConfig(batch_size=3, progress=True))
    out = p.protect(torch.rand(7, 3, 4, 4))
    assert p.chunk_sizes == [3, 3, 1] and out.shape[0] == 7
    assert p.protect(torch.rand(0, 3, 4, 4)).shape == (0, 3, 4, 4)


def test_features_not_implemented_by_default():
    with pytest.raises(NotImplementedError):
        NoiseProtector().features(torch.rand(1, 3, 4, 4))


def test_registry():
    assert get_protector("test-noise") is NoiseProtector
    with pytest.raises(NotFound, match="test-noise"):
        get_protector("nope")
    assert get_protector("generator").method == "generator"
