"""Read TF.js graph-model nodes: the ``model.json`` node dicts the importer consumes.

Decodes node attributes (base64 strings, int lists, fused-op lists), normalises input
references, reads constants stored inline in the graph, and orders the nodes that feed
the requested outputs. Pure data handling with no torch, shared by the graph builder
and the graph-rewrite passes.
"""
from __future__ import annotations

import base64

import numpy as np

from photoveil.errors import InvalidInput, UnsupportedOp


def attr(node: dict, key: str) -> dict:
    return node.get("attr", {}).get(key, {})


def attr_s(node: dict, key: str, default: str = "") -> str:
    s = attr(node, key).get("s")
    return base64.b64decode(s).decode() if s is not None else default


def attr_ints(node: dict, key: str) -> list[int]:
    return [int(v) for v in attr(node, key).get("list", {}).get("i", [])]


def attr_b(node: dict, key: str, default: bool = False) -> bool:
    return bool(attr(node, key).get("b", default))


def attr_f(node: dict, key: str, default: float = 0.0) -> float:
    return float(attr(node, key).get("f", default))


def fused_ops(node: dict) -> list[str]:
    return [base64.b64decode(s).decode() for s in attr(node, "fused_ops").get("list", {}).get("s", [])]


def input_key(name: str) -> str:
    """Normalise an input reference: ``node:0`` -> ``node``; ``node:k`` (k>0) kept."""
    name = name.lstrip("^")
    if ":" in name:
        base, idx = name.rsplit(":", 1)
        if idx == "0":
            return base
    return name


def inline_tensor(node: dict) -> np.ndarray | None:
    """A Const's value stored in the graph itself (rare: TF.js puts values in the shards)."""
    t = attr(node, "value").get("tensor")
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


def topo_order(nodes: dict[str, dict], outputs: list[str]) -> list[dict]:
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
                k = input_key(i)
                if k not in nodes:
                    raise UnsupportedOp(f"node {name!r} reads output {i!r}; only single-output ops are supported")
                if not state.get(k):
                    stack.append((k, False))
    return order
