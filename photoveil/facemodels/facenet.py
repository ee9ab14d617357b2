"""``FaceNet``: a pretrained face network behind one calling convention.

Every model takes ``x``: ``[N,3,H,W]`` float32 RGB in ``[0,1]`` at ``spec.input_size``; the
wrapper applies the network's own normalisation (``pre``), runs the converted network
(``body``: an imported TF.js graph or the face-api ResNet-34), and shapes the outputs
(``post``): a tensor for recognizers, a dict of named tensors otherwise.

``split(point)`` cuts ``body`` at a layer index (or a named point of ``spec.split_points``)
into ``shallow = pre + body[:k]`` and ``rest = body[k:] + post`` with
``rest(shallow(x)) == forward(x)``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from photoveil.errors import InvalidInput

if TYPE_CHECKING:
    from photoveil.facemodels.spec import FaceModelSpec


class Affine(nn.Module):
    """Per-channel ``x * scale + shift`` (the network's input normalisation, NCHW)."""

    def __init__(self, scale, shift):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x):
        return x * self.scale + self.shift


class ChannelMix(nn.Module):
    """``y[:, o] = sum_i matrix[o, i] * x[:, i]``: a channel reorder/scale as a 1x1 convolution
    (exact for permutations, and lowered into the XNNPACK delegate unlike indexing)."""

    def __init__(self, matrix):
        super().__init__()
        weight = torch.as_tensor(matrix, dtype=torch.float32)
        self.register_buffer("weight", weight.reshape(*weight.shape, 1, 1))

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight)


def rgb_to_bgr(scale: float = 1.0) -> ChannelMix:
    """RGB -> BGR, times ``scale``."""
    return ChannelMix(torch.eye(3).flip(0) * scale)


class Grayscale(nn.Module):
    """RGB -> one channel ``(0.2989 R + 0.587 G + 0.114 B) * scale + shift`` (human's emotion input)."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.register_buffer("weights", torch.tensor([0.2989, 0.5870, 0.1140]).reshape(1, 3, 1, 1) * scale)
        self.shift = float(shift)

    def forward(self, x):
        return (x * self.weights).sum(1, keepdim=True) + self.shift


class NamedOutputs(nn.Module):
    """Tuple of graph outputs -> dict ``{name: tensor}`` (optionally reshaped per name)."""

    def __init__(self, names: tuple[str, ...], shapes: dict[str, tuple[int, ...]] | None = None):
        super().__init__()
        self.names, self.shapes = tuple(names), dict(shapes or {})

    def forward(self, outs):
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        res = {}
        for name, t in zip(self.names, outs):
            shape = self.shapes.get(name)
            res[name] = t.reshape(t.shape[0], *shape) if shape else t
        return res


class BlazeFaceHead(nn.Module):
    """BlazeFace's four raw outputs -> ``scores`` [N,896,1] logits and ``regressors`` [N,896,16].

    Anchor order is human's: the 512 stride-16 anchors (16x16 cells x 2) first, then the 384
    stride-32 anchors (8x8 cells x 6); see :func:`photoveil.facemodels.registry.blazeface_anchors`.
    """

    def forward(self, outs):
        s512, r512, s384, r384 = outs
        return {"scores": torch.cat([s512, s384], 1), "regressors": torch.cat([r512, r384], 1)}


class FaceNet(nn.Module):
    """A pretrained face network in ``[0,1]`` RGB pixel space (eval mode, frozen weights)."""

    def __init__(self, spec: FaceModelSpec, pre: nn.Module, body: nn.Module, post: nn.Module):
        super().__init__()
        self.spec = spec
        self.pre, self.body, self.post = pre, body, post
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def check_input(self, x: torch.Tensor) -> None:
        h, w = self.spec.input_size
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (h, w):
            raise InvalidInput(f"{self.spec.name} expects [N,3,{h},{w}] RGB in [0,1], got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        return self.post(self.body(self.pre(x)))

    def split_index(self, point: str | int) -> int:
        if isinstance(point, str):
            if point not in self.spec.split_points:
                raise InvalidInput(f"{self.spec.name} has no split point {point!r}; "
                                   f"accepted: {', '.join(self.spec.split_points)} or a layer index")
            return self.spec.split_points[point]
        n = len(self.body)
        if not isinstance(point, int) or not 0 < point < n:
            raise InvalidInput(f"{self.spec.name}: split index {point!r} out of range; accepted 1..{n - 1}")
        return point

    def split(self, point: str | int) -> tuple[nn.Module, nn.Module]:
        """``(shallow, rest)`` at a named point or layer index; ``rest(shallow(x)) == self(x)``."""
        shallow, rest = self.body.split(self.split_index(point))
        return nn.Sequential(self.pre, shallow).eval(), nn.Sequential(rest, self.post).eval()
