"""Batched, label-preserving augmentation of image tensors (on the device they live on).

Used by the zoo classifiers' and the protective generator's training loops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, padding: int, hflip: bool) -> torch.Tensor:
    """Batched random crop (zero padding ``padding``, per-image shift) and horizontal flip."""
    n, _, h, w = x.shape
    if padding:
        xp = F.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
        dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
        rows = (torch.arange(h, device=x.device) + dy)[:, None, :, None]  # (n, 1, h, 1)
        cols = (torch.arange(w, device=x.device) + dx)[:, None, None, :]  # (n, 1, 1, w)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = xp[batch, chan, rows, cols]
    if hflip:
        flip = torch.rand(n, 1, 1, 1, device=x.device) < 0.5
        x = torch.where(flip, x.flip(3), x)
    return x
