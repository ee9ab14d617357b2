"""Translate TF.js graph nodes into torch steps: layout tracking and load-time folding.

:class:`GraphBuilder` walks the nodes in topological order and emits one
:class:`~photoveil.tfjs.ops.Step` per op (plus layout conversions). TF.js graphs are
NHWC; every 4-D value is kept in NCHW storage (``NCHW``) and a permute to NHWC order
(``PLAIN``) is inserted only before ops that need it (``Reshape``, ``MatMul`` on 4-D
data, ...), reusing one conversion per value. Weights are converted to torch layout once
here, and scale/bias/batch-norm/activation ops that follow a conv whose output feeds
nothing else are folded into that conv, so the forward pass never touches a weight.
Each step is run once on a nominal zero input while building, which gives the shapes
later ops need.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from photoveil.errors import InvalidInput, UnsupportedOp
from photoveil.tfjs.nodes import attr, attr_b, attr_f, attr_ints, attr_s, fused_ops, inline_tensor, input_key
from photoveil.tfjs.ops import (BINARY, UNARY, ActStep, Activation, AddNStep, BinaryStep, ConcatStep, ConvStep,
                                LinearStep, MatMulStep, PadStep, PermuteStep, PoolStep, ReduceStep, ReshapeStep,
                                SliceStep, SoftmaxStep, Step, UnaryStep)

NCHW, PLAIN = "nchw", "plain"  # storage of a value: 4-D NHWC data kept as NCHW, or as-is
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


class _Val:
    __slots__ = ("slot", "layout", "nominal")

    def __init__(self, slot, layout, nominal):
        self.slot, self.layout, self.nominal = slot, layout, nominal

    @property
    def rank(self) -> int:
        return self.nominal.dim()



class GraphBuilder:
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
            arr = inline_tensor(node)
        if arr is None:
            raise InvalidInput(f"Const node {key!r} has no value in the weight shards")
        self.consts[key] = arr
        return arr

    def need_const(self, node: dict, idx: int) -> np.ndarray:
        key = input_key(node["input"][idx])
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
            self.conversions[key] = self._add(PermuteStep("ToNCHW", node, TO_NCHW), [v], NCHW)
        return self.conversions[key]

    def as_plain(self, v: _Val, node: str) -> _Val:
        if v.layout == PLAIN:
            return v
        key = (v.slot, PLAIN)
        if key not in self.conversions:
            self.conversions[key] = self._add(PermuteStep("ToNHWC", node, TO_NHWC), [v], PLAIN)
        return self.conversions[key]

    def val(self, node: dict, idx: int) -> _Val:
        key = input_key(node["input"][idx])
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
            t = t.permute(TO_NCHW).contiguous()
        return t

    @staticmethod
    def _axis(axis: int, rank: int) -> int:
        return axis + rank if axis < 0 else axis

    # ---- build
    def build(self, order: list[dict], input_name: str, input_nhwc: tuple[int, ...]) -> None:
        for n in order:
            for i in n.get("input", []):
                if not i.startswith("^"):
                    self.n_consumers[input_key(i)] += 1
        rank = len(input_nhwc)
        nominal = torch.zeros(input_nhwc)
        if rank == 4:
            nominal = nominal.permute(TO_NCHW).contiguous()
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
            if attr_s(n, "data_format", "NHWC") != "NHWC":
                raise UnsupportedOp(f"op {op} (node {name!r}): only NHWC data_format is supported")
            k, s = attr_ints(n, "ksize"), attr_ints(n, "strides")
            pad = attr_s(n, "padding", "VALID")
            if pad not in ("SAME", "VALID"):
                raise UnsupportedOp(f"op {op} (node {name!r}): padding {pad!r} (accepted: SAME, VALID)")
            x = self.as_nchw(self.val(n, 0), name)
            return self._add(PoolStep(op, name, "max" if op == "MaxPool" else "avg", k[1:3], s[1:3], pad), [x], NCHW)
        if op in ("Pad", "PadV2", "MirrorPad"):
            return self.pad(n)
        if op in UNARY:
            x = self.val(n, 0)
            return self._add(UnaryStep(op, name), [x], x.layout)
        if op in Activation.KINDS and op != "Prelu":
            x = self.val(n, 0)
            alpha = attr_f(n, "alpha", 0.2) if op == "LeakyRelu" else None
            if self._try_fold_act(x, op, alpha):
                return x
            return self._add(ActStep(op, name, Activation(op, alpha)), [x], x.layout)
        if op == "Prelu":
            x = self.val(n, 0)
            alpha = self._const_for(np.asarray(self.need_const(n, 1)), x)
            if x.layout == NCHW and alpha.dim() == 4 and alpha.numel() == x.nominal.shape[1]:
                alpha = alpha.reshape(-1)  # per-channel -> F.prelu
            return self._add(ActStep(op, name, Activation("Prelu", alpha)), [x], x.layout)
        if op in BINARY:
            return self.binary(n)
        if op == "AddN":
            xs = [self.val(n, i) for i in range(len(n["input"]))]
            if len({v.layout for v in xs}) > 1:
                xs = [self.as_plain(v, name) for v in xs]
            return self._add(AddNStep(op, name), xs, xs[0].layout)
        if op in ("FusedBatchNorm", "FusedBatchNormV3"):
            x = self.val(n, 0)
            scale, offset, mean, var = (np.asarray(self.need_const(n, i), np.float64) for i in range(1, 5))
            mul = scale / np.sqrt(var + attr_f(n, "epsilon", 1e-3))
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
            dims = [self._axis(d, x.rank) for d in attr_ints(n, "squeeze_dims") or attr_ints(n, "axis")]
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
                axis, xs = int(attr(n, "axis").get("i", 0)), [self.val(n, i) for i in range(nin)]
            if op == "ConcatV2" and all(v.layout == NCHW for v in xs):
                axis = TO_NHWC[self._axis(axis, 4)]  # NHWC axis -> NCHW storage axis
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
        if attr_s(n, "data_format", "NHWC") != "NHWC":
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
        fused = fused_ops(n) if op.startswith("_Fused") or op.startswith("Fused") else []
        nargs = int(attr(n, "num_args").get("i", 0))
        if fused:
            head = fused[0]
            if head == "BiasAdd":
                bias = torch.as_tensor(np.asarray(self.need_const(n, 2), np.float32)).reshape(-1).clone()
            elif head in ("FusedBatchNorm", "FusedBatchNormV3"):
                scale, offset, mean, var = (np.asarray(self.need_const(n, 2 + i), np.float64) for i in range(4))
                mul = scale / np.sqrt(var + attr_f(n, "epsilon", 1e-3))
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
                    act_alpha = attr_f(n, "leakyrelu_alpha", 0.2)
        strides, dil = attr_ints(n, "strides") or [1, 1, 1, 1], attr_ints(n, "dilations") or [1, 1, 1, 1]
        pad = attr_s(n, "padding", "VALID")
        if pad == "EXPLICIT":
            e = attr_ints(n, "explicit_paddings")
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
        ta, tb = attr_b(n, "transpose_a") or attr_b(n, "adj_x"), attr_b(n, "transpose_b") or attr_b(n, "adj_y")
        a = self.as_plain(self.val(n, 0), name)
        w = self.const(input_key(n["input"][1]))
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
            fused = fused_ops(n)
            nargs = int(attr(n, "num_args").get("i", 0))
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
                    act_alpha = attr_f(n, "leakyrelu_alpha", 0.2)
        return self._add(LinearStep(op, name, weight, bias, Activation(act_kind, act_alpha)), [a], PLAIN)

    def pad(self, n: dict) -> _Val:
        op, name = n["op"], n["name"]
        x = self.val(n, 0)
        p = np.asarray(self.need_const(n, 1)).reshape(-1, 2).astype(int)
        value = float(np.asarray(self.need_const(n, 2)).reshape(-1)[0]) if op == "PadV2" else 0.0
        mode = "constant"
        if op == "MirrorPad":
            m = attr_s(n, "mode", "REFLECT")
            if m != "REFLECT":
                raise UnsupportedOp(f"op MirrorPad (node {name!r}): mode {m!r} (accepted: REFLECT)")
            mode = "reflect"
        if x.layout == NCHW:
            p = p[list(TO_NCHW)]
        if mode != "constant" and (p[:2] != 0).any():
            raise UnsupportedOp(f"op {op} (node {name!r}): reflect padding of batch/channel dims")
        pads = tuple(int(v) for pair in p[::-1] for v in pair)  # F.pad wants last dim first
        return self._add(PadStep(op, name, pads, mode, value), [x], x.layout)

    def binary(self, n: dict) -> _Val:
        op, name = n["op"], n["name"]
        ka, kb = input_key(n["input"][0]), input_key(n["input"][1])
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
        keep = attr_b(n, "keep_dims")
        if x.layout == NCHW:
            dims = tuple(TO_NHWC[a] for a in axes)  # NHWC axis -> NCHW storage axis
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
        bm, em = int(attr(n, "begin_mask").get("i", 0)), int(attr(n, "end_mask").get("i", 0))
        sm, nm = int(attr(n, "shrink_axis_mask").get("i", 0)), int(attr(n, "new_axis_mask").get("i", 0))
        if int(attr(n, "ellipsis_mask").get("i", 0)):
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
