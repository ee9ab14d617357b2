"""face-api's ResNet-34 face descriptor (dlib ``dlib_face_recognition_resnet_model_v1``
ported to TF.js by face-api) as a plain PyTorch module: ``[N,3,150,150]`` RGB -> ``[N,128]``.

Architecture and preprocessing follow ``@vladmandic/face-api`` ``src/faceRecognitionNet``:
input ``x`` in 0..255, ``(x - meanRgb) / 255`` with ``meanRgb = [122.782, 117.001, 104.298]``;
``convDown`` (7x7 stride 2 VALID + bias + scale + ReLU), ``maxPool(3, 2, VALID)``, residual
blocks ``[32]x3, [64 down, 64x3], [128 down, 128x2], [256 down, 256x2], 256 down``, global
mean, ``fc`` (256 -> 128). Every conv is ``conv(x) + bias`` then ``* scale.weights +
scale.biases``; both are folded into the conv at load time, and because the stem conv is
VALID (no padding) the mean subtraction folds into its bias as well. The module therefore
takes ``[0,1]`` pixels directly (``(255x - m)/255 = x - m/255``) and its forward has only
plain convolutions with constant weights (what XNNPACK needs for on-device gradients).

The network is an ``nn.Sequential`` of stages, so ``split(k)`` is a plain slice; the named
points are in :data:`SPLIT_POINTS`.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from photoveil.errors import InvalidInput
from photoveil.tfjs.weights_manifest import load_manifest_file

MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SIZE = (150, 150)
# residual stages in execution order: (weight prefix, downsampling?)
BLOCKS = (("conv32_1", False), ("conv32_2", False), ("conv32_3", False),
          ("conv64_down", True), ("conv64_1", False), ("conv64_2", False), ("conv64_3", False),
          ("conv128_down", True), ("conv128_1", False), ("conv128_2", False),
          ("conv256_down", True), ("conv256_1", False), ("conv256_2", False), ("conv256_down_out", True))
# index k: shallow = stages [0, k). 0 stem conv, 1 max-pool, 2.. residual blocks, then head.
SPLIT_POINTS = {"stem": 1, "pool": 2, "block1": 3, "block2": 4, "block3": 5, "down64": 6, "block64_3": 9}


def _folded_conv(w: dict[str, np.ndarray], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight ``[out,in,kh,kw]`` and bias with the scale layer folded in."""
    try:
        filters, bias = w[f"{prefix}/conv/filters"], w[f"{prefix}/conv/bias"]
        s, sb = w[f"{prefix}/scale/weights"], w[f"{prefix}/scale/biases"]
    except KeyError as exc:
        raise InvalidInput(f"face-api ResNet-34 weights lack {exc.args[0]!r}") from None
    weight = filters.astype(np.float64).transpose(3, 2, 0, 1) * s.astype(np.float64)[:, None, None, None]
    return (torch.tensor(weight, dtype=torch.float32),
            torch.tensor(bias.astype(np.float64) * s + sb, dtype=torch.float32))


class _Conv(nn.Conv2d):
    """A conv whose weights were folded at load (no grad), TF ``same``/``valid`` padding."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int, same: bool):
        out_c, in_c, k, _ = weight.shape
        super().__init__(in_c, out_c, k, stride, padding=k // 2 if same else 0)
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.copy_(bias)


class Stem(nn.Module):
    """``convDown``: 7x7/2 VALID conv (+ folded scale and mean subtraction) + ReLU."""

    def __init__(self, w: dict[str, np.ndarray]):
        super().__init__()
        weight, bias = _folded_conv(w, "conv32_down")
        # conv(x - m/255) = conv(x) - sum_{c,kh,kw} W[o,c,kh,kw] * m[c] / 255 (VALID: no padding)
        mean = torch.tensor(MEAN_RGB, dtype=torch.float64) / 255.0
        bias = bias - (weight.double() * mean[None, :, None, None]).sum((1, 2, 3)).float()
        self.conv = _Conv(weight, bias, 2, same=False)

    def forward(self, x):
        return F.relu(self.conv(x))


class Residual(nn.Module):
    """face-api ``residual`` / ``residualDown`` block.

    Down blocks: conv1 is 3x3/2 VALID; the shortcut is ``avgPool(2,2)`` of the input with its
    channels zero-padded to double, and when the conv path comes out one pixel smaller it is
    padded with a zero row/column at the bottom/right (exactly as face-api does).
    """

    def __init__(self, w: dict[str, np.ndarray], prefix: str, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = _Conv(*_folded_conv(w, f"{prefix}/conv1"), stride=2 if down else 1, same=not down)
        self.conv2 = _Conv(*_folded_conv(w, f"{prefix}/conv2"), stride=1, same=True)

    def forward(self, x):
        out = self.conv2(F.relu(self.conv1(x)))
        if not self.down:
            return F.relu(out + x)
        pooled = F.avg_pool2d(x, 2, 2)
        if out.shape[-1] != pooled.shape[-1] or out.shape[-2] != pooled.shape[-2]:
            out = F.pad(out, (0, pooled.shape[-1] - out.shape[-1], 0, pooled.shape[-2] - out.shape[-2]))
        if pooled.shape[1] != out.shape[1]:
            pooled = F.pad(pooled, (0, 0, 0, 0, 0, out.shape[1] - pooled.shape[1]))
        return F.relu(pooled + out)


class Head(nn.Module):
    """Global average pool + ``fc`` (no bias) -> 128-d descriptor (not L2-normalised)."""

    def __init__(self, fc: np.ndarray):
        super().__init__()
        self.fc = nn.Linear(fc.shape[0], fc.shape[1], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(fc.T.copy(), dtype=torch.float32))

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class FaceApiResNet34(nn.Sequential):
    """The face-api descriptor network; input ``[N,3,150,150]`` RGB in ``[0,1]``, output ``[N,128]``."""

    def __init__(self, weights: dict[str, np.ndarray]):
        stages: list[nn.Module] = [Stem(weights), nn.MaxPool2d(3, 2)]
        stages += [Residual(weights, p, d) for p, d in BLOCKS]
        if "fc" not in weights or weights["fc"].shape != (256, 128):
            raise InvalidInput("face-api ResNet-34 weights lack fc [256,128]")
        stages.append(Head(weights["fc"]))
        super().__init__(*stages)

    def split(self, k: int) -> tuple[nn.Sequential, nn.Sequential]:
        if not 0 < k < len(self):
            raise InvalidInput(f"split index {k} out of range; accepted 1..{len(self) - 1}")
        return nn.Sequential(*list(self)[:k]), nn.Sequential(*list(self)[k:])

    @classmethod
    def from_manifest(cls, path: str | os.PathLike) -> FaceApiResNet34:
        """Load ``face_recognition_model-weights_manifest.json`` (+ its ``.bin``)."""
        return cls(load_manifest_file(path)).eval()
