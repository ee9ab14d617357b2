"""``--method generator``: one U-Net forward pass (Ye et al., MMSys'22).

``x' = clamp(x + strength * U(x), 0, 1)`` with a generator trained by
``photoveil generator train`` (checkpoint written by :func:`photoveil.nets.save_generator`,
loaded with ``weights_only=True``; its training config and figures come with it as
``protector.meta``). ``strength`` 1.0 is exactly what the generator was trained for; the
lower presets scale the perturbation down (less visual protection, closer to the clean
target accuracy) and were not optimised by training.

Example::

    >>> p = GeneratorProtector(GeneratorConfig(checkpoint="run/generator.pt"))
    >>> protected = p.protect(images)          # [N, C, H, W] in [0, 1], C from the checkpoint
"""
from __future__ import annotations

from pathlib import Path

from photoveil.client.protect.base import Protector, register_protector
from photoveil.client.protect.configs import GeneratorConfig
from photoveil.errors import NotFound
from photoveil.paths import ASSETS

SHIPPED_DIR = ASSETS / "generators"


def shipped_generators() -> dict[str, Path]:
    """Name -> path of the generators shipped in ``photoveil/assets/generators``."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.pt"))}


@register_protector
class GeneratorProtector(Protector):
    """Protect with a trained U-Net perturbation generator (deterministic, one forward pass).

    Args:
        config: a ``GeneratorConfig``; ``config.checkpoint`` is loaded unless ``generator``
            is given.
        generator: an already built ``UNetGenerator`` (e.g. straight from training).
    """

    method = "generator"
    Config = GeneratorConfig
    PRESETS = {"low": {"strength": 0.5}, "mid": {"strength": 0.75}, "high": {"strength": 1.0}}

    def __init__(self, config: GeneratorConfig | None = None, *, generator=None) -> None:
        super().__init__(config)
        if generator is None:
            from photoveil.nets.unet import load_generator

            generator, self.meta = load_generator(self._resolve(self.config.checkpoint))
        else:
            self.meta = {}
        self.net = generator.to(self.config.device).eval()
        self.in_channels = self.net.in_channels

    @staticmethod
    def _resolve(checkpoint: str) -> Path:
        path = Path(checkpoint).expanduser()
        if path.is_file():
            return path
        shipped = shipped_generators()
        if checkpoint in shipped:
            return shipped[checkpoint]
        names = ", ".join(shipped) or "none shipped yet"
        raise NotFound(f"no generator checkpoint {checkpoint!r}: give a file path or a shipped name ({names})")

    def _protect(self, images, rng):
        import torch

        x = images.to(self.config.device, torch.float32)
        with torch.inference_mode():
            return self.net.protect(x, self.config.strength).to(images.device)
