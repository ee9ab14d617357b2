"""The torch implementations of TF.js ops: one :class:`Step` module per op family.

Each step reads value slots ``ins`` and writes slot ``out`` of a
:class:`~photoveil.tfjs.program.GraphProgram`; 4-D activations arrive in NCHW storage
and weights are already in torch layout, so ``forward`` never permutes or rescales a
weight. Also holds the op-name tables for element-wise ops (``UNARY``, ``BINARY``:
TF.js op name -> torch function) and the activations a conv or matmul can fuse
(:class:`Activation`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) for one spatial dim: the extra pixel goes after."""
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


class Step(nn.Module):
    """One operation: reads value slots ``ins`` and writes slot ``out``."""

    def __init__(self, op: str, node: str):
        super().__init__()
        self.op, self.node = op, node
        self.ins: tuple[int, ...] = ()
        self.out: int = -1

    def extra_repr(self) -> str:
        return f"{self.op} {self.node!r}"


class Activation(nn.Module):
    """A fused activation (``_FusedConv2D``/``_FusedMatMul`` 2nd op, or a standalone op)."""

    KINDS = ("Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Prelu", "Sigmoid", "Tanh")

    def __init__(self, kind: str | None, alpha: torch.Tensor | float | None = None):
        super().__init__()
        if kind is not None and kind not in self.KINDS:
            raise ValueError(f"activation {kind!r} not in {self.KINDS}")
        self.kind = kind
        self.leak = float(alpha) if kind == "LeakyRelu" else 0.0
        if kind == "Prelu":
            self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.float32))
        else:
            self.alpha = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kind
        if k is None:
            return x
        if k == "Relu":
            return F.relu(x)
        if k == "Relu6":
            return F.hardtanh(x, 0.0, 6.0)
        if k == "Elu":
            return F.elu(x)
        if k == "Selu":
            return F.selu(x)
        if k == "LeakyRelu":
            return F.leaky_relu(x, self.leak)
        if k == "Sigmoid":
            return torch.sigmoid(x)
        if k == "Tanh":
            return torch.tanh(x)
        # Prelu: x if x > 0 else alpha * x (alpha already laid out to broadcast)
        if self.alpha.dim() == 1 and x.dim() >= 2 and self.alpha.numel() == x.shape[1]:
            return F.prelu(x, self.alpha)
        return F.relu(x) + self.alpha * torch.clamp(x, max=0.0)


class ConvStep(Step):
    """Conv2D / DepthwiseConv2dNative (+ fused bias, BN, activation) as an NCHW conv."""

    def __init__(self, op, node, weight, bias, stride, dilation, groups, padding, act):
        super().__init__(op, node)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.dilation, self.groups = tuple(stride), tuple(dilation), groups
        self.padding = padding  # "SAME", "VALID" or explicit (top, bottom, left, right)
        self.act = act

    def _pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        if self.padding == "VALID":
            return 0, 0, 0, 0
        if self.padding == "SAME":
            kh, kw = self.weight.shape[-2:]
            return (*_same_pads(h, kh, self.stride[0], self.dilation[0]),
                    *_same_pads(w, kw, self.stride[1], self.dilation[1]))
        return tuple(self.padding)

    def forward(self, x):
        t, b, l, r = self._pads(x.shape[-2], x.shape[-1])
        if t == b and l == r:
            y = F.conv2d(x, self.weight, self.bias, self.stride, (t, l), self.dilation, self.groups)
        else:
            y = F.conv2d(F.pad(x, (l, r, t, b)), self.weight, self.bias, self.stride, 0,
                         self.dilation, self.groups)
        return self.act(y)


class LinearStep(Step):
    """MatMul / _FusedMatMul with a constant right operand."""

    def __init__(self, op, node, weight, bias, act):
        super().__init__(op, node)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.act = act

    def forward(self, x):
        return self.act(F.linear(x, self.weight, self.bias))


class MatMulStep(Step):
    def __init__(self, op, node, transpose_a: bool, transpose_b: bool):
        super().__init__(op, node)
        self.ta, self.tb = transpose_a, transpose_b

    def forward(self, a, b):
        return torch.matmul(a.transpose(-1, -2) if self.ta else a, b.transpose(-1, -2) if self.tb else b)


class PoolStep(Step):
    """MaxPool / AvgPool with TF padding (SAME pads are ignored by max, not counted by avg)."""

    def __init__(self, op, node, kind, ksize, stride, padding):
        super().__init__(op, node)
        self.kind, self.ksize, self.stride, self.padding = kind, tuple(ksize), tuple(stride), padding

    def forward(self, x):
        if self.padding == "SAME":
            t, b = _same_pads(x.shape[-2], self.ksize[0], self.stride[0], 1)
            l, r = _same_pads(x.shape[-1], self.ksize[1], self.stride[1], 1)
        else:
            t = b = l = r = 0
        if self.kind == "max":
            if t == b and l == r:
                return F.max_pool2d(x, self.ksize, self.stride, (t, l))
            return F.max_pool2d(F.pad(x, (l, r, t, b), value=-math.inf), self.ksize, self.stride)
        if t == b and l == r:
            return F.avg_pool2d(x, self.ksize, self.stride, (t, l), count_include_pad=False)
        # asymmetric: divide the window sum by the number of real pixels in the window
        k = self.ksize[0] * self.ksize[1]
        ones = F.pad(torch.ones_like(x[:, :1]), (l, r, t, b))
        return (F.avg_pool2d(F.pad(x, (l, r, t, b)), self.ksize, self.stride) * k
                / (F.avg_pool2d(ones, self.ksize, self.stride) * k))


class PadStep(Step):
    def __init__(self, op, node, pads: tuple[int, ...], mode: str, value: float = 0.0):
        super().__init__(op, node)
        self.pads, self.mode, self.value = tuple(pads), mode, value

    def forward(self, x):
        if self.mode == "constant":
            return F.pad(x, self.pads, value=self.value)
        return F.pad(x, self.pads, mode=self.mode)


UNARY = {
    "Abs": torch.abs, "Neg": torch.neg, "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt,
    "Rsqrt": torch.rsqrt, "Square": torch.square, "Reciprocal": torch.reciprocal,
    "Softplus": F.softplus, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
    "Sign": torch.sign, "Log1p": torch.log1p, "Cos": torch.cos, "Sin": torch.sin,
}


class UnaryStep(Step):
    def forward(self, x):
        return UNARY[self.op](x)


BINARY = {
    "Add": torch.add, "AddV2": torch.add, "BiasAdd": torch.add, "Sub": torch.sub, "Mul": torch.mul,
    "RealDiv": torch.div, "Div": torch.div, "Maximum": torch.maximum, "Minimum": torch.minimum,
    "Pow": torch.pow, "SquaredDifference": lambda a, b: torch.square(a - b),
    "FloorDiv": lambda a, b: torch.div(a, b, rounding_mode="floor"),
}


class BinaryStep(Step):
    """Element-wise binary op; ``const`` (a buffer) replaces operand ``const_pos`` if set."""

    def __init__(self, op, node, const: torch.Tensor | None = None, const_pos: int = 1):
        super().__init__(op, node)
        if const is not None:
            self.register_buffer("const", const)
        else:
            self.const = None
        self.const_pos = const_pos

    def forward(self, *xs):
        if self.const is None:
            a, b = xs
        elif self.const_pos == 0:
            a, b = self.const, xs[0]
        else:
            a, b = xs[0], self.const
        return BINARY[self.op](a, b)


class AddNStep(Step):
    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class ReduceStep(Step):
    def __init__(self, op, node, dims: tuple[int, ...], keepdim: bool):
        super().__init__(op, node)
        self.dims, self.keepdim = tuple(dims), keepdim

    def forward(self, x):
        if not self.dims:
            return x
        if self.op == "Mean":
            return x.mean(self.dims, keepdim=self.keepdim)
        if self.op == "Sum":
            return x.sum(self.dims, keepdim=self.keepdim)
        if self.op == "Prod":
            for d in sorted(self.dims, reverse=True):
                x = x.prod(d, keepdim=self.keepdim)
            return x
        return x.amax(self.dims, keepdim=self.keepdim) if self.op == "Max" else x.amin(self.dims, keepdim=self.keepdim)


class SoftmaxStep(Step):
    def __init__(self, op, node, dim: int):
        super().__init__(op, node)
        self.dim = dim

    def forward(self, x):
        return F.log_softmax(x, self.dim) if self.op == "LogSoftmax" else F.softmax(x, self.dim)


class ActStep(Step):
    def __init__(self, op, node, act: Activation):
        super().__init__(op, node)
        self.act = act

    def forward(self, x):
        return self.act(x)


class PermuteStep(Step):
    def __init__(self, op, node, perm):
        super().__init__(op, node)
        self.perm = tuple(perm)

    def forward(self, x):
        return x.permute(self.perm)


class ReshapeStep(Step):
    def __init__(self, op, node, shape):
        super().__init__(op, node)
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x):
        return x.reshape(self.shape)


class ConcatStep(Step):
    def __init__(self, op, node, dim: int, stack: bool = False):
        super().__init__(op, node)
        self.dim, self.stack = dim, stack

    def forward(self, *xs):
        return torch.stack(xs, self.dim) if self.stack else torch.cat(xs, self.dim)


class SliceStep(Step):
    """StridedSlice / Slice with constant bounds: per-dim (start, stop, step) or an index."""

    def __init__(self, op, node, spec: tuple):
        super().__init__(op, node)
        self.spec = spec  # tuple of (start, stop, step) | int (shrink) | None (new axis)

    def forward(self, x):
        idx = tuple(slice(*s) if isinstance(s, tuple) else s for s in self.spec)
        return x[idx]
