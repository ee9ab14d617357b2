"""The host loop shared by the step methods (PMT, FMD).

Both methods are ``steps`` calls of one pure step function::

    x_t, fixed = start(x, rng)                   # the method's start image and constant inputs
    for _ in range(steps):
        x_t = step(x_t, *fixed, *draws(x, rng))  # draws: fresh random inputs per step

The *step* is the only thing that differs between the eager protector (an ``nn.Module``)
and the on-device one (an ExecuTorch program, :mod:`photoveil.client.runtime`): each passes
its step to :class:`StepProtector`'s constructor, and the start image, random draws and
loop are literally the same code, so the same seed gives the same draws on both.
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING

from photoveil.client.protect.base import Protector, ProtectorConfig

if TYPE_CHECKING:
    import torch

Step = Callable[..., "torch.Tensor"]


class StepProtector(Protector):
    """A protector whose work is ``config.steps`` calls of ``step``.

    Subclasses implement :meth:`start` and, when each step takes fresh random inputs,
    :meth:`draws`; their ``Config`` has ``steps`` and ``device``.
    """

    def __init__(self, config: ProtectorConfig | None, step: Step) -> None:
        super().__init__(config)
        self.step = step

    @abc.abstractmethod
    def start(self, x: torch.Tensor, rng: torch.Generator | None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``(x_0, fixed)``: the start image and the inputs every step gets after ``x_t``."""

    def draws(self, x: torch.Tensor, rng: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        """One step's random inputs (passed after ``fixed``); none by default."""
        return ()

    def _protect(self, images: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        x = images.to(self.config.device)
        x_t, fixed = self.start(x, rng)
        for _ in range(self.config.steps):
            x_t = self.step(x_t, *fixed, *self.draws(x, rng))
        return x_t.to(images.device)
