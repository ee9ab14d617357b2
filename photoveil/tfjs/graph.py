"""Import a TensorFlow.js *graph model* (``model.json`` + weight shards) as a torch module.

The result, :class:`TFJSGraph`, takes NCHW float input and is a flat list of steps (plain
``conv2d``, ``linear``, pooling and element-wise ops) executed in an order fixed at load
time. TF.js graphs are NHWC; 4-D activations are kept in NCHW storage throughout and
weights are converted once at load (``[kh,kw,in,out] -> [out,in,kh,kw]``), so the forward
pass never permutes or multiplies a weight: scale/bias ops that follow a convolution are
folded into its weight and bias, which keeps weights constant for XNNPACK. A permute is
inserted only before ops that need NHWC order (``Reshape``, ``MatMul`` on 4-D data, ...).
4-D graph outputs are returned as NCHW.

Because the steps run in a fixed order, the module splits at any step index ``k`` into
``shallow`` (steps ``[0, k)``) and ``rest`` (steps ``[k, n)``) with
``rest(shallow(x)) == forward(x)``; tensors still alive at the cut (skip connections) are
carried across it as a tuple. :meth:`GraphProgram.clean_cuts` lists the cuts where a single
tensor crosses.

Graph semantics follow the TF.js runtime (e.g. a ``_FusedConv2D`` with a fused ``Relu``
hands the activated tensor to *every* consumer). ``repair_fused_prelu=True`` undoes a
converter fusion that breaks decomposed PReLUs (see :func:`_repair_fused_prelu`).
"""
from __future__ import annotations

import base64
import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from photoveil.errors import InvalidInput, UnsupportedOp
from photoveil.tfjs.weights_manifest import load_weights

NCHW, PLAIN = "nchw", "plain"  # storage of a value: 4-D NHWC data kept as NCHW, or as-is
_TO_NCHW, _TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


# --------------------------------------------------------------------------- attributes
def _attr(node: dict, key: str) -> dict:
    return node.get("attr", {}).get(key, {})


def _attr_s(node: dict, key: str, default: str = "") -> str:
    s = _attr(node, key).get("s")
    return base64.b64decode(s).decode() if s is not None else default


def _attr_ints(node: dict, key: str) -> list[int]:
    return [int(v) for v in _attr(node, key).get("list", {}).get("i", [])]


def _attr_b(node: dict, key: str, default: bool = False) -> bool:
    return bool(_attr(node, key).get("b", default))


def _attr_f(node: dict, key: str, default: float = 0.0) -> float:
    return float(_attr(node, key).get("f", default))


def _fused_ops(node: dict) -> list[str]:
    return [base64.b64decode(s).decode() for s in _attr(node, "fused_ops").get("list", {}).get("s", [])]


def _key(name: str) -> str:
    """Normalise an input reference: ``node:0`` -> ``node``; ``node:k`` (k>0) kept."""
    name = name.lstrip("^")
    if ":" in name:
        base, idx = name.rsplit(":", 1)
        if idx == "0":
            return base
    return name


def _inline_tensor(node: dict) -> np.ndarray | None:
    """A Const's value stored in the graph itself (rare: TF.js puts values in the shards)."""
    t = _attr(node, "value").get("tensor")
    if not t:
        return None
    dims = [int(d.get("size", 0)) for d in t.get("tensorShape", {}).get("dim", [])]
    dtype = {"DT_FLOAT": np.float32, "DT_INT32": np.int32}.get(t.get("dtype"), np.float32)
    if "tensorContent" in t:
        arr = np.frombuffer(base64.b64decode(t["tensorContent"]), dtype=dtype)
    else:
        vals = t.get("floatVal") or t.get("intVal")
        if vals is None:
            return None
        arr = np.asarray([float(v) for v in vals], dtype=dtype)
    n = int(np.prod(dims)) if dims else 1
    if arr.size == 1 and n > 1:
        arr = np.full(n, arr[0], dtype=dtype)
    return arr.reshape(dims)


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) for one spatial dim: the extra pixel goes after."""
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


# --------------------------------------------------------------------------- steps
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


_UNARY = {
    "Abs": torch.abs, "Neg": torch.neg, "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt,
    "Rsqrt": torch.rsqrt, "Square": torch.square, "Reciprocal": torch.reciprocal,
    "Softplus": F.softplus, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
    "Sign": torch.sign, "Log1p": torch.log1p, "Cos": torch.cos, "Sin": torch.sin,
}


class UnaryStep(Step):
    def forward(self, x):
        return _UNARY[self.op](x)


_BINARY = {
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
        return _BINARY[self.op](a, b)


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


# --------------------------------------------------------------------------- program
class GraphProgram(nn.Module):
    """Run ``steps`` in order over value slots: inputs fill ``in_slots``, outputs read ``out_slots``.

    ``forward(*inputs)`` also accepts one tuple (what a ``shallow`` half returns) so that
    ``rest(shallow(x))`` works for cuts that carry several tensors.
    """

    def __init__(self, steps: list[Step], in_slots: tuple[int, ...], out_slots: tuple[int, ...]):
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.in_slots, self.out_slots = tuple(in_slots), tuple(out_slots)
        last_use: dict[int, int] = {}
        for i, st in enumerate(steps):
            for s in st.ins:
                last_use[s] = i
        frees: list[list[int]] = [[] for _ in steps]
        for s, i in last_use.items():
            if s not in self.out_slots:
                frees[i].append(s)
        self._frees = [tuple(f) for f in frees]
        produced = set(self.in_slots) | {st.out for st in steps}
        missing = [s for st in steps for s in st.ins if s not in produced]
        missing += [s for s in self.out_slots if s not in produced]
        if missing:
            raise ValueError(f"graph program reads slots {sorted(set(missing))} that nothing produces")

    def forward(self, *inputs):
        if len(inputs) == 1 and isinstance(inputs[0], (tuple, list)):
            inputs = tuple(inputs[0])
        if len(inputs) != len(self.in_slots):
            raise InvalidInput(f"expected {len(self.in_slots)} input tensor(s), got {len(inputs)}")
        vals = dict(zip(self.in_slots, inputs))
        for step, free in zip(self.steps, self._frees):
            vals[step.out] = step(*[vals[s] for s in step.ins])
            for s in free:
                del vals[s]
        outs = tuple(vals[s] for s in self.out_slots)
        return outs[0] if len(outs) == 1 else outs

    def __len__(self) -> int:
        return len(self.steps)

    def live_at(self, k: int) -> tuple[int, ...]:
        """Slots produced before step ``k`` (or inputs) that steps ``>= k`` or outputs read."""
        if not 0 <= k <= len(self.steps):
            raise InvalidInput(f"split index {k} out of range; accepted: 0..{len(self.steps)}")
        before = set(self.in_slots) | {st.out for st in list(self.steps)[:k]}
        needed = {s for st in list(self.steps)[k:] for s in st.ins} | set(self.out_slots)
        return tuple(sorted(before & needed))

    def split(self, k: int) -> tuple[GraphProgram, GraphProgram]:
        """``(shallow, rest)``: steps ``[0,k)`` and ``[k,n)`` sharing the same weights."""
        live = self.live_at(k)
        steps = list(self.steps)
        return GraphProgram(steps[:k], self.in_slots, live), GraphProgram(steps[k:], live, self.out_slots)

    def clean_cuts(self) -> list[int]:
        """Step indices where exactly one tensor crosses the cut (sequential split points)."""
        return [k for k in range(1, len(self.steps)) if len(self.live_at(k)) == 1]

    def layers(self) -> list[tuple[int, str, str]]:
        """``(index, op, node name)`` of every step, in execution order."""
        return [(i, st.op, st.node) for i, st in enumerate(self.steps)]


class TFJSGraph(GraphProgram):
    """A whole imported graph: ``forward(x)`` with ``x`` NCHW (for a 4-D placeholder).

    Attributes: ``input_name``, ``output_names`` (graph nodes, in ``forward``'s output
    order), ``output_keys`` (signature keys, when the model.json has a signature) and
    ``input_shape`` (the nominal NCHW shape the graph was built with).
    """

    def __init__(self, steps, in_slot, out_slots, input_name, output_names, output_keys, input_shape):
        super().__init__(steps, (in_slot,), tuple(out_slots))
        self.input_name, self.output_names = input_name, list(output_names)
        self.output_keys, self.input_shape = list(output_keys), tuple(input_shape)

    def index_after(self, node_name: str) -> int:
        """The split index just after the (last) step that computes ``node_name``."""
        hits = [i for i, st in enumerate(self.steps) if st.node == node_name]
        if not hits:
            raise InvalidInput(f"no step computes node {node_name!r}")
        return hits[-1] + 1


# --------------------------------------------------------------------------- builder
class _Val:
    __slots__ = ("slot", "layout", "nominal")

    def __init__(self, slot, layout, nominal):
        self.slot, self.layout, self.nominal = slot, layout, nominal

    @property
    def rank(self) -> int:
        return self.nominal.dim()


def _repair_fused_prelu(nodes: list[dict]) -> list[dict]:
    """Un-fuse a ``Relu`` that the TF.js converter merged into a conv feeding a decomposed PReLU.

    The source graph computed ``prelu(y) = relu(y) + alpha * (y - |y|) * 0.5`` with
    ``y = conv(x) + b``. The converter folded the ``Relu`` into the conv
    (``fused_ops=[BiasAdd, Relu]``) although ``y`` has other consumers, so ``Abs``/``Sub``
    now read ``relu(y)``: the negative branch is always 0 and the PReLU degrades to a ReLU.
    This rewrite gives ``Abs``/``Sub`` the pre-activation ``y`` again and inserts an explicit
    ``Relu`` for the ``Add`` operand that was the original ``Relu``'s output.
    """
    consumers: dict[str, list[dict]] = defaultdict(list)
    for n in nodes:
        for i in n.get("input", []):
            consumers[_key(i)].append(n)
    out = []
    for n in nodes:
        fused = _fused_ops(n)
        users = consumers.get(n["name"], [])
        ops = {u["op"] for u in users}
        if (n["op"] in ("_FusedConv2D", "FusedDepthwiseConv2dNative") and fused[-1:] == ["Relu"]
                and {"Abs", "Sub"} <= ops and ops & {"Add", "AddV2"}):
            n = json.loads(json.dumps(n))
            n["attr"]["fused_ops"]["list"]["s"] = [base64.b64encode(s.encode()).decode() for s in fused[:-1]]
            relu_name = n["name"] + "/repaired_relu"
            out.append(n)
            out.append({"name": relu_name, "op": "Relu", "input": [n["name"]], "attr": {}})
            for u in users:
                if u["op"] in ("Add", "AddV2"):
                    u["input"] = [relu_name if _key(i) == n["name"] else i for i in u["input"]]
            continue
        out.append(n)
    return out


class _Builder:
    def __init__(self, nodes: list[dict], weights: dict[str, np.ndarray], fold: bool):
        self.nodes = {n["name"]: n for n in nodes}
        self.weights = weights
        self.fold = fold
        self.vals: dict[str, _Val] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.steps: list[Step] = []
        self.nslots = 0
        self.conversions: dict[tuple[int, str], _Val] = {}
        self.n_consumers: dict[str, int] = defaultdict(int)
        self.outputs: set[str] = set()
        # conv steps whose output only feeds one op, so a following scale/bias can fold in
        self.foldable: dict[int, ConvStep] = {}

    # ---- values
    def _new_slot(self) -> int:
        self.nslots += 1
        return self.nslots - 1

    def const(self, key: str) -> np.ndarray | None:
        if key in self.consts:
            return self.consts[key]
        node = self.nodes.get(key)
        if node is None or node["op"] != "Const":
            return None
        arr = self.weights.get(key)
        if arr is None:
            arr = _inline_tensor(node)
        if arr is None:
            raise InvalidInput(f"Const node {key!r} has no value in the weight shards")
        self.consts[key] = arr
        return arr

    def need_const(self, node: dict, idx: int) -> np.ndarray:
        key = _key(node["input"][idx])
        arr = self.const(key)
        if arr is None:
            raise UnsupportedOp(f"op {node['op']} (node {node['name']!r}): input {idx} ({key!r}) "
                                f"must be a constant; computed values are not supported there")
        return arr

    def _add(self, step: Step, ins: list[_Val], layout: str) -> _Val:
        step.ins = tuple(v.slot for v in ins)
        step.out = self._new_slot()
        with torch.no_grad():
            nominal = step(*[v.nominal for v in ins])
        self.steps.append(step)
        return _Val(step.out, layout, nominal)

    def as_nchw(self, v: _Val, node: str) -> _Val:
        if v.layout == NCHW:
            return v
        if v.rank != 4:
            raise UnsupportedOp(f"node {node!r} needs a 4-D input but got shape {tuple(v.nominal.shape)}")
        key = (v.slot, NCHW)
        if key not in self.conversions:
            self.conversions[key] = self._add(PermuteStep("ToNCHW", node, _TO_NCHW), [v], NCHW)
        return self.conversions[key]

    def as_plain(self, v: _Val, node: str) -> _Val:
        if v.layout == PLAIN:
            return v
        key = (v.slot, PLAIN)
        if key not in self.conversions:
            self.conversions[key] = self._add(PermuteStep("ToNHWC", node, _TO_NHWC), [v], PLAIN)
        return self.conversions[key]

    def val(self, node: dict, idx: int) -> _Val:
        key = _key(node["input"][idx])
        if key not in self.vals:
            raise UnsupportedOp(f"op {node['op']} (node {node['name']!r}): input {key!r} is not a "
                                f"computed tensor (constant-only sub-graphs are not supported)")
        return self.vals[key]

    @staticmethod
    def _const_for(arr: np.ndarray, v: _Val) -> torch.Tensor:
        """A constant laid out to broadcast against ``v`` (NHWC-broadcast -> NCHW storage)."""
        t = torch.as_tensor(np.asarray(arr, dtype=np.float32))
        if v.layout == NCHW and t.dim() > 0:
            while t.dim() < 4:
                t = t.unsqueeze(0)
            t = t.permute(_TO_NCHW).contiguous()
        return t

    @staticmethod
    def _axis(axis: int, rank: int) -> int:
        return axis + rank if axis < 0 else axis

    # ---- build
    def build(self, order: list[dict], input_name: str, input_nhwc: tuple[int, ...]) -> None:
        for n in order:
            for i in n.get("input", []):
                if not i.startswith("^"):
                    self.n_consumers[_key(i)] += 1
        rank = len(input_nhwc)
        nominal = torch.zeros(input_nhwc)
        if rank == 4:
            nominal = nominal.permute(_TO_NCHW).contiguous()
        self.in_slot = self._new_slot()
        self.vals[input_name] = _Val(self.in_slot, NCHW if rank == 4 else PLAIN, nominal)
        for node in order:
            if node["op"] in ("Const", "Placeholder") or node["name"] in self.vals:
                continue
            self.vals[node["name"]] = self.node(node)

    def node(self, n: dict) -> _Val:
        op, name = n["op"], n["name"]
        if op in ("Identity", "StopGradient", "Snapshot", "NoOp"):
            return self.val(n, 0)
        if op in ("Conv2D", "DepthwiseConv2dNative", "_FusedConv2D", "FusedDepthwiseConv2dNative",
                  "DepthwiseConv2D"):
            return self.conv(n)
        if op in ("MatMul", "_FusedMatMul", "BatchMatMul", "BatchMatMulV2"):
            return self.matmul(n)
        if op in ("MaxPool", "AvgPool"):
            if _attr_s(n, "data_format", "NHWC") != "NHWC":
                raise UnsupportedOp(f"op {op} (node {name!r}): only NHWC data_format is supported")
            k, s = _attr_ints(n, "ksize"), _attr_ints(n, "strides")
            pad = _attr_s(n, "padding", "VALID")
            if pad not in ("SAME", "VALID"):
                raise UnsupportedOp(f"op {op} (node {name!r}): padding {pad!r} (accepted: SAME, VALID)")
            x = self.as_nchw(self.val(n, 0), name)
            return self._add(PoolStep(op, name, "max" if op == "MaxPool" else "avg", k[1:3], s[1:3], pad), [x], NCHW)
        if op in ("Pad", "PadV2", "MirrorPad"):
            return self.pad(n)
        if op in _UNARY:
            x = self.val(n, 0)
            return self._add(UnaryStep(op, name), [x], x.layout)
        if op in Activation.KINDS and op != "Prelu":
            x = self.val(n, 0)
            alpha = _attr_f(n, "alpha", 0.2) if op == "LeakyRelu" else None
            if self._try_fold_act(x, op, alpha):
                return x
            return self._add(ActStep(op, name, Activation(op, alpha)), [x], x.layout)
        if op == "Prelu":
            x = self.val(n, 0)
            alpha = self._const_for(np.asarray(self.need_const(n, 1)), x)
            if x.layout == NCHW and alpha.dim() == 4 and alpha.numel() == x.nominal.shape[1]:
                alpha = alpha.reshape(-1)  # per-channel -> F.prelu
            return self._add(ActStep(op, name, Activation("Prelu", alpha)), [x], x.layout)
        if op in _BINARY:
            return self.binary(n)
        if op == "AddN":
            xs = [self.val(n, i) for i in range(len(n["input"]))]
            if len({v.layout for v in xs}) > 1:
                xs = [self.as_plain(v, name) for v in xs]
            return self._add(AddNStep(op, name), xs, xs[0].layout)
        if op in ("FusedBatchNorm", "FusedBatchNormV3"):
            x = self.val(n, 0)
            scale, offset, mean, var = (np.asarray(self.need_const(n, i), np.float64) for i in range(1, 5))
            mul = scale / np.sqrt(var + _attr_f(n, "epsilon", 1e-3))
            if self._fold_affine(x, mul, offset - mean * mul, name):
                return x
            y = self._add(BinaryStep("Mul", name, self._const_for(mul, x)), [x], x.layout)
            return self._add(BinaryStep("Add", name, self._const_for(offset - mean * mul, y)), [y], y.layout)
        if op in ("Mean", "Sum", "Max", "Min", "Prod"):
            return self.reduce(n)
        if op in ("Softmax", "LogSoftmax"):
            x = self.val(n, 0)
            dim = 1 if x.layout == NCHW else x.rank - 1
            return self._add(SoftmaxStep(op, name, dim), [x], x.layout)
        if op == "Reshape":
            x = self.as_plain(self.val(n, 0), name)
            shape = [int(s) for s in np.asarray(self.need_const(n, 1)).reshape(-1)]
            # keep the batch dim free when the graph hard-codes batch 1 (or -1)
            per_sample = int(np.prod(x.nominal.shape[1:])) if x.rank else 1
            resolved = list(x.nominal.reshape(shape).shape) if shape else []
            if resolved and shape[0] in (1, -1) and int(np.prod(resolved[1:])) == per_sample:
                shape = [-1, *resolved[1:]]
            return self._add(ReshapeStep(op, name, shape), [x], PLAIN)
        if op == "Squeeze":
            x = self.as_plain(self.val(n, 0), name)
            dims = [self._axis(d, x.rank) for d in _attr_ints(n, "squeeze_dims") or _attr_ints(n, "axis")]
            if not dims:  # squeeze every size-1 dim except the batch
                dims = [d for d in range(1, x.rank) if x.nominal.shape[d] == 1]
            shape = [s for d, s in enumerate(x.nominal.shape) if d not in dims]
            shape[0] = -1
            return self._add(ReshapeStep(op, name, shape), [x], PLAIN)
        if op == "ExpandDims":
            x = self.as_plain(self.val(n, 0), name)
            axis = int(np.asarray(self.need_const(n, 1)).reshape(-1)[0])
            axis = axis + x.rank + 1 if axis < 0 else axis
            shape = list(x.nominal.shape)
            shape.insert(axis, 1)
            shape[0 if axis else 1] = -1
            return self._add(ReshapeStep(op, name, shape), [x], PLAIN)
        if op in ("ConcatV2", "Pack"):
            nin = len([i for i in n["input"] if not i.startswith("^")])
            if op == "ConcatV2":
                axis, xs = int(np.asarray(self.need_const(n, nin - 1)).reshape(-1)[0]), [self.val(n, i) for i in range(nin - 1)]
            else:
                axis, xs = int(_attr(n, "axis").get("i", 0)), [self.val(n, i) for i in range(nin)]
            if op == "ConcatV2" and all(v.layout == NCHW for v in xs):
                axis = _TO_NHWC[self._axis(axis, 4)]  # NHWC axis -> NCHW storage axis
                return self._add(ConcatStep(op, name, axis), xs, NCHW)
            xs = [self.as_plain(v, name) for v in xs]
            rank = xs[0].rank + (1 if op == "Pack" else 0)
            return self._add(ConcatStep(op, name, self._axis(axis, rank), stack=op == "Pack"), xs, PLAIN)
        if op == "Transpose":
            x = self.as_plain(self.val(n, 0), name)
            perm = [int(p) for p in np.asarray(self.need_const(n, 1)).reshape(-1)]
            return self._add(PermuteStep(op, name, perm), [x], PLAIN)
        if op in ("StridedSlice", "Slice"):
            return self.slice(n)
        raise UnsupportedOp(f"TF.js op {op!r} (node {name!r}) is not supported by the importer")

    # ---- op families
    def conv(self, n: dict) -> _Val:
        op, name = n["op"], n["name"]
        if _attr_s(n, "data_format", "NHWC") != "NHWC":
            raise UnsupportedOp(f"op {op} (node {name!r}): only NHWC data_format is supported")
        x = self.as_nchw(self.val(n, 0), name)
        f = np.asarray(self.need_const(n, 1), dtype=np.float32)
        if f.ndim != 4:
            raise InvalidInput(f"node {name!r}: filter must be 4-D [kh,kw,in,out], got {f.shape}")
        depthwise = "Depthwise" in op
        kh, kw, cin, cm = f.shape
        if depthwise:  # [kh,kw,in,mult] -> [in*mult, 1, kh, kw]; out channel = c*mult + m
            w = torch.from_numpy(f.reshape(kh, kw, cin * cm).transpose(2, 0, 1).copy()).unsqueeze(1)
            groups, cout = cin, cin * cm
        else:
            w = torch.from_numpy(f.transpose(3, 2, 0, 1).copy())
            groups, cout = x.nominal.shape[1] // cin, cm
        bias = torch.zeros(cout)
        act_kind, act_alpha = None, None
        fused = _fused_ops(n) if op.startswith("_Fused") or op.startswith("Fused") else []
        nargs = int(_attr(n, "num_args").get("i", 0))
        if fused:
            head = fused[0]
            if head == "BiasAdd":
                bias = torch.as_tensor(np.asarray(self.need_const(n, 2), np.float32)).reshape(-1).clone()
            elif head in ("FusedBatchNorm", "FusedBatchNormV3"):
                scale, offset, mean, var = (np.asarray(self.need_const(n, 2 + i), np.float64) for i in range(4))
                mul = scale / np.sqrt(var + _attr_f(n, "epsilon", 1e-3))
                w = w * torch.as_tensor(mul, dtype=torch.float32).reshape(-1, 1, 1, 1)
                bias = torch.as_tensor(offset - mean * mul, dtype=torch.float32)
            else:
                raise UnsupportedOp(f"op {op} (node {name!r}): fused op {head!r} "
                                    f"(accepted: BiasAdd, FusedBatchNorm)")
            for extra in fused[1:]:
                if extra not in Activation.KINDS:
                    raise UnsupportedOp(f"op {op} (node {name!r}): fused activation {extra!r} "
                                        f"(accepted: {', '.join(Activation.KINDS)})")
                act_kind = extra
                if extra == "Prelu":
                    act_alpha = torch.as_tensor(np.asarray(self.need_const(n, 1 + nargs), np.float32)).reshape(-1)
                elif extra == "LeakyRelu":
                    act_alpha = _attr_f(n, "leakyrelu_alpha", 0.2)
        strides, dil = _attr_ints(n, "strides") or [1, 1, 1, 1], _attr_ints(n, "dilations") or [1, 1, 1, 1]
        pad = _attr_s(n, "padding", "VALID")
        if pad == "EXPLICIT":
            e = _attr_ints(n, "explicit_paddings")
            pad = tuple(e[2:6])  # NHWC pairs: (top, bottom, left, right)
        elif pad not in ("SAME", "VALID"):
            raise UnsupportedOp(f"op {op} (node {name!r}): padding {pad!r} (accepted: SAME, VALID, EXPLICIT)")
        step = ConvStep(op, name, w.float().contiguous(), bias.float(), strides[1:3], dil[1:3], groups, pad,
                        Activation(act_kind, act_alpha))
        out = self._add(step, [x], NCHW)
        if self.fold and act_kind is None and self.n_consumers[name] == 1 and name not in self.outputs:
            self.foldable[out.slot] = step
        return out

    def _try_fold(self, x: _Val, op: str, c: np.ndarray, node: str) -> bool:
        """Fold ``x op c`` (node ``node``) into the conv that produced ``x``, if it can."""
        c = np.asarray(c, dtype=np.float64)
        if op in ("RealDiv", "Div"):
            if not np.all(c != 0):
                return False
            affine = (1.0 / c, 0.0)
        else:
            affine = {"Mul": (c, 0.0), "Add": (1.0, c), "AddV2": (1.0, c), "BiasAdd": (1.0, c),
                      "Sub": (1.0, -c)}.get(op)
        return affine is not None and self._fold_affine(x, *affine, node)

    def _fold_affine(self, x: _Val, mul, add, node: str) -> bool:
        """``x * mul + add`` into the conv that produced ``x`` (per-out-channel or scalar).

        Only when ``x`` feeds nothing else; the conv stays foldable while each folded node
        in turn has a single consumer and is not a graph output.
        """
        step = self.foldable.get(x.slot)
        if step is None:
            return False
        cout = step.weight.shape[0]
        vecs = []
        for c in (np.asarray(mul, np.float64), np.asarray(add, np.float64)):
            if c.size not in (1, cout) or (c.ndim and any(d != 1 for d in c.shape[:-1])):
                return False
            vecs.append(torch.as_tensor(np.broadcast_to(c.reshape(-1), (cout,)).copy(), dtype=torch.float32))
        m, a = vecs
        with torch.no_grad():
            step.weight.mul_(m.reshape(-1, 1, 1, 1))
            step.bias.mul_(m).add_(a)
            x.nominal = step(self._input_nominal(step))
        if self.n_consumers[node] != 1 or node in self.outputs:
            del self.foldable[x.slot]
        return True

    def _try_fold_act(self, x: _Val, op: str, alpha) -> bool:
        """Make a standalone activation the fused activation of the conv feeding only it."""
        step = self.foldable.get(x.slot)
        if step is None:
            return False
        step.act = Activation(op, alpha)
        del self.foldable[x.slot]
        with torch.no_grad():
            x.nominal = step(self._input_nominal(step))
        return True

    def _input_nominal(self, step: Step) -> torch.Tensor:
        for v in list(self.vals.values()) + list(self.conversions.values()):
            if v.slot == step.ins[0]:
                return v.nominal
        raise RuntimeError("input of a folded step not found")

    def matmul(self, n: dict) -> _Val:
        op, name = n["op"], n["name"]
        ta, tb = _attr_b(n, "transpose_a") or _attr_b(n, "adj_x"), _attr_b(n, "transpose_b") or _attr_b(n, "adj_y")
        a = self.as_plain(self.val(n, 0), name)
        w = self.const(_key(n["input"][1]))
        if w is None:
            if op == "_FusedMatMul":
                raise UnsupportedOp(f"op {op} (node {name!r}): the weight operand must be constant")
            b = self.as_plain(self.val(n, 1), name)
            return self._add(MatMulStep(op, name, ta, tb), [a, b], PLAIN)
        if ta or np.asarray(w).ndim != 2:
            raise UnsupportedOp(f"op {op} (node {name!r}): transpose_a or a non-2-D constant operand")
        w = np.asarray(w, np.float32)
        weight = torch.from_numpy((w if tb else w.T).copy())  # nn.Linear layout [out, in]
        bias, act_kind, act_alpha = None, None, None
        if op == "_FusedMatMul":
            fused = _fused_ops(n)
            nargs = int(_attr(n, "num_args").get("i", 0))
            if fused[:1] == ["BiasAdd"]:
                bias = torch.as_tensor(np.asarray(self.need_const(n, 2), np.float32)).reshape(-1)
            elif fused:
                raise UnsupportedOp(f"op {op} (node {name!r}): fused op {fused[0]!r} (accepted: BiasAdd)")
            for extra in fused[1:]:
                if extra not in Activation.KINDS:
                    raise UnsupportedOp(f"op {op} (node {name!r}): fused activation {extra!r}")
                act_kind = extra
                if extra == "Prelu":
                    act_alpha = torch.as_tensor(np.asarray(self.need_const(n, 1 + nargs), np.float32)).reshape(-1)
                elif extra == "LeakyRelu":
                    act_alpha = _attr_f(n, "leakyrelu_alpha", 0.2)
        return self._add(LinearStep(op, name, weight, bias, Activation(act_kind, act_alpha)), [a], PLAIN)

    def pad(self, n: dict) -> _Val:
        op, name = n["op"], n["name"]
        x = self.val(n, 0)
        p = np.asarray(self.need_const(n, 1)).reshape(-1, 2).astype(int)
        value = float(np.asarray(self.need_const(n, 2)).reshape(-1)[0]) if op == "PadV2" else 0.0
        mode = "constant"
        if op == "MirrorPad":
            m = _attr_s(n, "mode", "REFLECT")
            if m != "REFLECT":
                raise UnsupportedOp(f"op MirrorPad (node {name!r}): mode {m!r} (accepted: REFLECT)")
            mode = "reflect"
        if x.layout == NCHW:
            p = p[list(_TO_NCHW)]
        if mode != "constant" and (p[:2] != 0).any():
            raise UnsupportedOp(f"op {op} (node {name!r}): reflect padding of batch/channel dims")
        pads = tuple(int(v) for pair in p[::-1] for v in pair)  # F.pad wants last dim first
        return self._add(PadStep(op, name, pads, mode, value), [x], x.layout)

    def binary(self, n: dict) -> _Val:
        op, name = n["op"], n["name"]
        ka, kb = _key(n["input"][0]), _key(n["input"][1])
        ca, cb = self.const(ka), self.const(kb)
        if ca is not None and cb is not None:
            raise UnsupportedOp(f"op {op} (node {name!r}): both operands constant (constant folding unsupported)")
        if ca is None and cb is None:
            a, b = self.val(n, 0), self.val(n, 1)
            if a.layout != b.layout:
                if a.rank == b.rank == 4:
                    a, b = self.as_nchw(a, name), self.as_nchw(b, name)
                else:
                    a, b = self.as_plain(a, name), self.as_plain(b, name)
            return self._add(BinaryStep(op, name), [a, b], a.layout)
        pos = 0 if ca is not None else 1
        c = ca if ca is not None else cb
        x = self.val(n, 1 - pos)
        if pos == 1 and self._try_fold(x, op, c, name):
            return x
        return self._add(BinaryStep(op, name, self._const_for(c, x), pos), [x], x.layout)

    def reduce(self, n: dict) -> _Val:
        op, name = n["op"], n["name"]
        x = self.val(n, 0)
        axes = sorted({self._axis(int(a), x.rank) for a in np.asarray(self.need_const(n, 1)).reshape(-1)})
        keep = _attr_b(n, "keep_dims")
        if x.layout == NCHW:
            dims = tuple(_TO_NHWC[a] for a in axes)  # NHWC axis -> NCHW storage axis
            y = self._add(ReduceStep(op, name, dims, True), [x], NCHW)
            if keep:
                return y
            y = self.as_plain(y, name)
            shape = [s for d, s in enumerate(y.nominal.shape) if d not in axes]
            if 0 not in axes:
                shape[0] = -1
            return self._add(ReshapeStep("Squeeze", name, shape), [y], PLAIN)
        return self._add(ReduceStep(op, name, tuple(axes), keep), [x], PLAIN)

    def slice(self, n: dict) -> _Val:
        op, name = n["op"], n["name"]
        x = self.as_plain(self.val(n, 0), name)
        begin = [int(v) for v in np.asarray(self.need_const(n, 1)).reshape(-1)]
        if op == "Slice":
            size = [int(v) for v in np.asarray(self.need_const(n, 2)).reshape(-1)]
            spec = tuple((b, None if s == -1 else b + s, 1) for b, s in zip(begin, size))
            return self._add(SliceStep(op, name, spec), [x], PLAIN)
        end = [int(v) for v in np.asarray(self.need_const(n, 2)).reshape(-1)]
        strides = [int(v) for v in np.asarray(self.need_const(n, 3)).reshape(-1)]
        bm, em = int(_attr(n, "begin_mask").get("i", 0)), int(_attr(n, "end_mask").get("i", 0))
        sm, nm = int(_attr(n, "shrink_axis_mask").get("i", 0)), int(_attr(n, "new_axis_mask").get("i", 0))
        if int(_attr(n, "ellipsis_mask").get("i", 0)):
            raise UnsupportedOp(f"op StridedSlice (node {name!r}): ellipsis_mask is not supported")
        spec = []
        for i, (b, e, s) in enumerate(zip(begin, end, strides)):
            if nm >> i & 1:
                spec.append(None)
            elif sm >> i & 1:
                spec.append(b)
            else:
                spec.append((None if bm >> i & 1 else b, None if em >> i & 1 else e, s))
        return self._add(SliceStep(op, name, tuple(spec)), [x], PLAIN)


def _topo_order(nodes: dict[str, dict], outputs: list[str]) -> list[dict]:
    order, state = [], {}
    for root in outputs:
        stack = [(root, False)]
        while stack:
            name, done = stack.pop()
            if done:
                if state.get(name) != 2:
                    state[name] = 2
                    order.append(nodes[name])
                continue
            if state.get(name):
                continue
            if name not in nodes:
                raise InvalidInput(f"graph references missing node {name!r}")
            state[name] = 1
            stack.append((name, True))
            for i in reversed(nodes[name].get("input", [])):
                if i.startswith("^"):
                    continue  # control dependency: no data
                k = _key(i)
                if k not in nodes:
                    raise UnsupportedOp(f"node {name!r} reads output {i!r}; only single-output ops are supported")
                if not state.get(k):
                    stack.append((k, False))
    return order


def build_graph(model: dict, weights: dict[str, np.ndarray], input_shape: tuple[int, ...] | None = None,
                outputs: list[str] | None = None, fold: bool = True,
                repair_fused_prelu: bool = False) -> TFJSGraph:
    """Build a :class:`TFJSGraph` from a parsed model.json and its decoded weights.

    ``input_shape`` is the NHWC shape of the placeholder (defaults to the placeholder's own
    shape, batch 1); ``outputs`` the node names to return (defaults to the signature's
    outputs, else every node nothing consumes).
    """
    topo = model.get("modelTopology", model)
    node_list = topo.get("node", [])
    if topo.get("library", {}).get("function"):
        raise UnsupportedOp("graph uses control-flow functions (library.function); not supported")
    if repair_fused_prelu:
        node_list = _repair_fused_prelu(node_list)
    nodes = {n["name"]: n for n in node_list}
    sig = model.get("signature") or model.get("userDefinedMetadata", {}).get("signature") or {}
    keys: list[str] = []
    if outputs is None:
        if sig.get("outputs"):
            keys = list(sig["outputs"])
            outputs = [_key(v.get("name", k)) for k, v in sig["outputs"].items()]
        else:
            used = {_key(i) for n in node_list for i in n.get("input", [])}
            outputs = [n["name"] for n in node_list if n["name"] not in used and n["op"] not in ("Const", "NoOp")]
    outputs = [_key(o) for o in outputs]
    order = _topo_order(nodes, outputs)
    placeholders = [n for n in order if n["op"] == "Placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedOp(f"graph needs exactly one Placeholder feeding the outputs, found "
                            f"{[p['name'] for p in placeholders]}")
    ph = placeholders[0]
    if input_shape is None:
        dims = [int(d.get("size", -1)) for d in _attr(ph, "shape").get("shape", {}).get("dim", [])]
        if not dims or any(d < 0 for d in dims[1:]):
            raise InvalidInput(f"placeholder {ph['name']!r} has shape {dims}; pass input_shape (NHWC)")
        input_shape = (1, *dims[1:])
    b = _Builder(node_list, weights, fold)
    b.outputs = set(outputs)
    b.build(order, ph["name"], tuple(input_shape))
    out_vals = []
    for o in outputs:
        v = b.vals[o]
        if v.rank == 4 and v.layout == PLAIN:
            v = b.as_nchw(v, o)
        out_vals.append(v.slot)
    nchw_shape = tuple(input_shape[i] for i in _TO_NCHW) if len(input_shape) == 4 else tuple(input_shape)
    return TFJSGraph(b.steps, b.in_slot, out_vals, ph["name"], outputs, keys, nchw_shape)


def load_graph_model(path: str | os.PathLike, input_shape: tuple[int, ...] | None = None,
                     outputs: list[str] | None = None, fold: bool = True,
                     repair_fused_prelu: bool = False) -> TFJSGraph:
    """Load ``model.json`` (+ the weight shards beside it) as a :class:`TFJSGraph` in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"TF.js model file {path} does not exist")
    model = json.loads(path.read_text())
    if model.get("format") not in (None, "graph-model"):
        raise UnsupportedOp(f"{path}: format {model.get('format')!r}; only TF.js graph-model is supported")
    weights = load_weights(model.get("weightsManifest", []), path.parent)
    return build_graph(model, weights, input_shape, outputs, fold, repair_fused_prelu).eval()
