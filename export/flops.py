"""The distance to the machine's limit: FLOPs per call counted from an exported graph, and
the machine's measured GEMM peak (``photoveil bench``'s ``gflops_per_call``,
``achieved_gflops``, ``peak_gflops``).

:func:`graph_flops` walks the nodes of a ``torch.export`` program (or any FX graph whose
nodes carry ``meta["val"]``) and counts:

* convolutions (``convolution`` / ``conv2d``, plain and transposed): ``2 * C_in/groups * kh * kw`` per output element
  (per *input* element for transposed ones), the bias add as one more;
* ``mm`` / ``addmm`` / ``bmm`` / ``linear``: ``2 * M * N * K``;
* every other arithmetic op (add, mul, div, clamp, relu, pooling windows, mean ...): one
  FLOP per output element (pooling: one per window element);
* data movement (view, permute, slice, cat, clone, pad, gather) counts nothing.

:func:`gemm_peak_gflops` runs square fp32 GEMMs at the current thread count in two
libraries and returns the best GFLOP/s of a few sizes: ``torch.mm`` (MKL) and an XNNPACK
fully-connected layer in an ExecuTorch program, the same kernels and runtime as the
programs measured against it. Both count: MKL takes a slow path on some non-Intel CPUs
(on an AVX-512 AMD EPYC it reached about half of XNNPACK's GEMM), and a peak below what the
programs achieve would say nothing.

Example::

    >>> flops = graph_flops(torch.export.export(module, inputs))
    >>> gemm_peak_gflops()["peak_gflops"]     # e.g. 60 GFLOP/s on one AVX2 core
"""
from __future__ import annotations

import math
import time
from collections import Counter

import torch

MOVEMENT = {"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "slice", "select", "cat",
            "stack", "clone", "contiguous", "constant_pad_nd", "pad", "gather", "index_select", "unsqueeze",
            "squeeze", "flatten", "alias", "detach", "copy", "_to_copy", "to", "lift_fresh_copy", "zeros",
            "zeros_like", "full", "full_like", "empty", "arange", "scalar_tensor", "sym_size", "split",
            "split_with_sizes", "unbind", "chunk", "flip", "roll", "repeat", "_assert_tensor_metadata",
            "getitem", "eq", "lt", "gt", "le", "ge", "ne", "where", "scatter_add", "index", "floor", "_to_dim_order_copy"}


def _val(node):
    v = node.meta.get("val") if hasattr(node, "meta") else None
    return v if isinstance(v, torch.Tensor) else None


def _numel(t) -> int:
    return int(math.prod(t.shape)) if t is not None else 0


def _name(node) -> str:
    target = node.target
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


def node_flops(node) -> int:
    """FLOPs of one FX ``call_function`` node (0 for data movement)."""
    name = _name(node)
    out = node.meta.get("val")
    if isinstance(out, (tuple, list)):
        out = out[0] if out and isinstance(out[0], torch.Tensor) else None
    if name in ("convolution", "conv2d", "conv_transpose2d", "conv1d"):
        x, w = _val(node.args[0]), _val(node.args[1])
        if x is None or w is None:
            return 0
        transposed = name == "conv_transpose2d" or (name == "convolution" and len(node.args) > 6
                                                     and bool(node.args[6]))
        bias = len(node.args) > 2 and node.args[2] is not None
        if transposed:  # w: [C_in, C_out/groups, kh, kw]: every input element hits the kernel once
            per = 2 * w.shape[1] * math.prod(w.shape[2:])
            return _numel(x) * per + (_numel(out) if bias else 0)
        per = 2 * w.shape[1] * math.prod(w.shape[2:])  # w: [C_out, C_in/groups, kh, kw]
        return _numel(out) * per + (_numel(out) if bias else 0)
    if name in ("mm", "bmm", "addmm", "linear", "matmul"):
        a = _val(node.args[1] if name == "addmm" else node.args[0])
        if a is None or out is None:
            return 0
        return 2 * _numel(out) * a.shape[-1]
    if name in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
        k = node.args[1]
        k = list(k) * 2 if len(k) == 1 else list(k)
        return _numel(out) * k[0] * k[1]
    if name in ("mean", "sum", "amax", "amin"):
        return _numel(_val(node.args[0]))
    if name in MOVEMENT or out is None:
        return 0
    return _numel(out)


def graph_flops(program) -> dict:
    """``{"flops": total, "by_op": {op: flops}}`` of an ExportedProgram / GraphModule / Graph."""
    graph = getattr(program, "graph", program)
    by_op: Counter = Counter()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        f = node_flops(node)
        if f:
            by_op[_name(node)] += f
    return {"flops": int(sum(by_op.values())), "by_op": dict(by_op.most_common())}


def _fastest(fn, seconds: float) -> float:
    """The fastest of at least 3 runs of ``fn`` within ``seconds`` (a peak, not a p50)."""
    fn()
    t_end = time.perf_counter() + seconds
    fastest, runs = float("inf"), 0
    while runs < 3 or time.perf_counter() < t_end:
        runs += 1
        t0 = time.perf_counter()
        fn()
        fastest = min(fastest, time.perf_counter() - t0)
    return fastest


def _xnnpack_gemm(n: int):
    """An ExecuTorch program of one ``[n, n] @ [n, n]`` XNNPACK fully-connected layer, as a
    callable (the input bound)."""
    from executorch.runtime import Runtime

    from photoveil.export.lowering import LowerOptions, lower

    x = torch.rand(n, n)
    lowered = lower(torch.nn.Linear(n, n, bias=False), (x,), LowerOptions(kind="gemm"))
    program = Runtime.get().load_program(lowered.buffer)
    method = program.load_method("forward")

    def run(_alive=(lowered, program)):  # the method needs its program and bytes alive
        return method.execute([x])

    return run


def gemm_peak_gflops(sizes=(256, 512, 768), seconds: float = 0.3, libraries=("torch", "xnnpack")) -> dict:
    """Best fp32 GEMM GFLOP/s at the current thread count (``torch`` threads for
    ``torch.mm``; the ExecuTorch pool for XNNPACK), per library and overall:
    ``{"peak_gflops": best, "peak_gflops_torch": ..., "peak_gflops_xnnpack": ...}``."""
    by_lib: dict[str, float] = {}
    for lib in libraries:
        best = 0.0
        for n in sizes:
            if lib == "torch":
                a, b, c = torch.rand(n, n), torch.rand(n, n), torch.empty(n, n)
                fn = lambda: torch.mm(a, b, out=c)  # noqa: E731
            else:
                fn = _xnnpack_gemm(n)
            best = max(best, 2 * n**3 / _fastest(fn, seconds) / 1e9)
        by_lib[lib] = round(best, 3)
    return {"peak_gflops": max(by_lib.values()), **{f"peak_gflops_{k}": v for k, v in by_lib.items()}}


__all__ = ["graph_flops", "gemm_peak_gflops", "node_flops"]
