"""Batched outputs of a face network on images of any size."""
from __future__ import annotations

import torch

from photoveil.imageops import input_hw, resize_to


def embed(net, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Recognizer embeddings ``[N, D]`` (float, not normalised) of ``images`` ``[N, 3, H, W]``
    in [0, 1], each batch resized to the net's input size; no gradients."""
    hw = input_hw(net)
    out = []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            out.append(net(resize_to(chunk, hw)).float().flatten(1))
    return torch.cat(out) if out else torch.empty(0)


__all__ = ["embed"]
