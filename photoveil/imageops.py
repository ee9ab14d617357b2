"""Image-tensor operations shared across the package (no dependency on higher packages).

Images are float tensors ``[N, 3, H, W]`` in [0, 1]; a "net" is anything with a
``spec.input_size`` (a :class:`~photoveil.facemodels.facenet.FaceNet`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from photoveil.errors import InvalidInput


def input_hw(net) -> tuple[int, int]:
    """The ``(H, W)`` input size of a face network (``spec.input_size`` as int or pair)."""
    size = net.spec.input_size
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_to(images: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``images`` resized to ``hw`` (antialiased bilinear, clamped to [0, 1]); unchanged if
    already that size."""
    if tuple(images.shape[-2:]) == tuple(hw):
        return images
    return F.interpolate(images, size=hw, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


class ResizeTo(nn.Module):
    """Differentiable bilinear resize to a fixed ``(H, W)`` (put in front of a network that
    takes another input size than the images it is given)."""

    def __init__(self, hw: tuple[int, int]):
        super().__init__()
        self.hw = tuple(hw)

    def forward(self, x):
        return x if tuple(x.shape[-2:]) == self.hw else F.interpolate(x, size=self.hw, mode="bilinear",
                                                                       align_corners=False)


def rescale(images: torch.Tensor, factor: float = 0.5) -> torch.Tensor:
    """Down-scale by ``factor`` (antialiased bilinear) and back up to the original size."""
    if not 0.05 <= factor < 1.0:
        raise InvalidInput(f"down-scale factor must be in [0.05, 1), got {factor}")
    h, w = images.shape[-2:]
    small = F.interpolate(images, size=(max(1, round(h * factor)), max(1, round(w * factor))),
                          mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def in_layout(tensors, layout: str) -> list[torch.Tensor]:
    """``tensors`` in a program's memory ``layout`` (``NHWC``: channels-last strides for the
    4-D ones; otherwise contiguous): what a program lowered with that layout takes."""
    fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
    return [t.contiguous(memory_format=fmt) if t.dim() == 4 else t.contiguous() for t in tensors]


__all__ = ["input_hw", "resize_to", "ResizeTo", "rescale", "in_layout"]
