"""Which operators of a program stayed outside the XNNPACK delegate (``photoveil export
... --explain``).

Every operator left outside runs as an ExecuTorch portable kernel: slow (no SIMD,
single-threaded) and, at each boundary, a layout conversion in and out of the delegate.
For the step programs the goal is *nothing* outside but tiny bookkeeping ops.

Example::

    >>> rep = explain(prog.module, prog.inputs)
    >>> print(rep.table())
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch


@dataclass
class Report:
    """``outside``: edge operator -> count of nodes not delegated; ``inside``: the same
    for delegated nodes; ``partitions``: number of XNNPACK delegate calls."""

    outside: dict[str, int] = field(default_factory=dict)
    inside: dict[str, int] = field(default_factory=dict)
    partitions: int = 0

    @property
    def delegated_nodes(self) -> int:
        return sum(self.inside.values())

    def table(self) -> str:
        total = self.delegated_nodes + sum(self.outside.values())
        lines = [f"{self.partitions} XNNPACK partition(s); {self.delegated_nodes}/{total} operator nodes delegated"]
        if self.outside:
            lines.append("outside the delegate (portable kernels):")
            width = max(len(k) for k in self.outside)
            lines += [f"  {k:<{width}}  x{v}" for k, v in sorted(self.outside.items(), key=lambda kv: -kv[1])]
        else:
            lines.append("nothing outside the delegate")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"partitions": self.partitions, "delegated_nodes": self.delegated_nodes,
                "outside": self.outside, "inside": self.inside}


def _op_name(node: torch.fx.Node) -> str:
    target = node.target
    name = getattr(target, "__name__", str(target))
    return name.replace("aten.", "").replace("dim_order_ops.", "")


def _count(gm: torch.fx.GraphModule, skip=()) -> Counter:
    import operator

    c: Counter = Counter()
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem or node.target in skip:
            continue
        c[_op_name(node)] += 1
    return c


def explain_edge(edge) -> Report:
    """Report of an ``EdgeProgramManager`` after ``to_edge_transform_and_lower``."""
    rep = Report()
    outside: Counter = Counter()
    inside: Counter = Counter()
    for name in edge.methods:
        gm = edge.exported_program(name).graph_module
        delegate_call = torch.ops.higher_order.executorch_call_delegate
        outside += _count(gm, skip=(delegate_call,))
        for node in gm.graph.nodes:
            if node.op == "call_function" and node.target is delegate_call:
                rep.partitions += 1
                lowered = getattr(gm, node.args[0].target)
                inside += _count(lowered.original_module.graph_module)
    rep.outside, rep.inside = dict(outside), dict(inside)
    return rep


def explain(module, example_inputs, options=None) -> Report:
    """Lower ``module`` (like :func:`lowering.lower`) and report what XNNPACK took."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from photoveil.export.lowering import _as_tuple, quantize_pt2e

    inputs = _as_tuple(example_inputs)
    if options is not None and options.quantize == "int8":
        module = quantize_pt2e(module, inputs, options.calibration)
    with torch.no_grad():
        exported = torch.export.export(module, inputs, strict=False)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()],
                                       compile_config=EdgeCompileConfig(_check_ir_validity=False))
    return explain_edge(edge)
