"""Name -> constructor registry of the classifier zoo (see :mod:`photoveil.zoo.archs`)."""
from __future__ import annotations

from typing import Callable, Sequence

ARCHS: tuple[str, ...] = (
    "vgg13_bn", "vgg16_bn", "resnet18", "resnet34", "densenet121", "mobilenet_v2", "googlenet", "inception_v3",
)
WIDTH_RANGE = (0.0625, 4.0)  # thinner nets hit MIN_CHANNELS everywhere; wider ones do not fit a CPU


def _builders() -> dict[str, Callable]:
    from photoveil.zoo import archs

    return {
        "vgg13_bn": lambda **kw: archs.VGG("vgg13_bn", **kw),
        "vgg16_bn": lambda **kw: archs.VGG("vgg16_bn", **kw),
        "resnet18": lambda **kw: archs.ResNet((2, 2, 2, 2), **kw),
        "resnet34": lambda **kw: archs.ResNet((3, 4, 6, 3), **kw),
        "densenet121": lambda **kw: archs.DenseNet((6, 12, 24, 16), **kw),
        "mobilenet_v2": archs.MobileNetV2,
        "googlenet": archs.GoogLeNet,
        "inception_v3": archs.InceptionV3,
    }


def create(arch: str, num_classes: int = 10, in_channels: int = 1, width: float = 1.0,
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
    """Build ``arch`` for ``(N, in_channels, 32, 32)`` inputs in [0, 1] -> ``(N, num_classes)`` logits.

    ``mean``/``std`` (one value per channel) are the fixed normalisation the model applies
    internally; default 0.5 / 0.25. Raises ``ValueError`` naming the accepted values.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of: {', '.join(ARCHS)}")
    lo, hi = WIDTH_RANGE
    if not (isinstance(width, (int, float)) and lo <= float(width) <= hi):
        raise ValueError(f"width must be a number in [{lo}, {hi}], got {width!r}")
    if not (isinstance(num_classes, int) and num_classes >= 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels!r}")
    return _builders()[arch](num_classes=num_classes, in_channels=in_channels, width=float(width), mean=mean, std=std)
