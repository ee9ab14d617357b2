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
converter fusion that breaks decomposed PReLUs (see
:func:`photoveil.tfjs.prelu_repair.repair_fused_prelu_nodes`).

The work is split by concern: :mod:`~photoveil.tfjs.nodes` reads node dicts,
:mod:`~photoveil.tfjs.prelu_repair` rewrites the node list, :mod:`~photoveil.tfjs.builder`
turns nodes into the steps of :mod:`~photoveil.tfjs.ops`, and :mod:`~photoveil.tfjs.program`
runs and splits them. This module is the entry point (:func:`load_graph_model`,
:func:`build_graph`) and re-exports :class:`GraphProgram` and :class:`TFJSGraph`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from photoveil.errors import InvalidInput, UnsupportedOp
from photoveil.tfjs.builder import PLAIN, TO_NCHW, GraphBuilder
from photoveil.tfjs.nodes import attr, input_key, topo_order
from photoveil.tfjs.prelu_repair import repair_fused_prelu_nodes
from photoveil.tfjs.program import GraphProgram, TFJSGraph
from photoveil.tfjs.weights_manifest import load_weights

__all__ = ["GraphProgram", "TFJSGraph", "build_graph", "load_graph_model"]


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
        node_list = repair_fused_prelu_nodes(node_list)
    nodes = {n["name"]: n for n in node_list}
    sig = model.get("signature") or model.get("userDefinedMetadata", {}).get("signature") or {}
    keys: list[str] = []
    if outputs is None:
        if sig.get("outputs"):
            keys = list(sig["outputs"])
            outputs = [input_key(v.get("name", k)) for k, v in sig["outputs"].items()]
        else:
            used = {input_key(i) for n in node_list for i in n.get("input", [])}
            outputs = [n["name"] for n in node_list if n["name"] not in used and n["op"] not in ("Const", "NoOp")]
    outputs = [input_key(o) for o in outputs]
    order = topo_order(nodes, outputs)
    placeholders = [n for n in order if n["op"] == "Placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedOp(f"graph needs exactly one Placeholder feeding the outputs, found "
                            f"{[p['name'] for p in placeholders]}")
    ph = placeholders[0]
    if input_shape is None:
        dims = [int(d.get("size", -1)) for d in attr(ph, "shape").get("shape", {}).get("dim", [])]
        if not dims or any(d < 0 for d in dims[1:]):
            raise InvalidInput(f"placeholder {ph['name']!r} has shape {dims}; pass input_shape (NHWC)")
        input_shape = (1, *dims[1:])
    b = GraphBuilder(node_list, weights, fold)
    b.outputs = set(outputs)
    b.build(order, ph["name"], tuple(input_shape))
    out_vals = []
    for o in outputs:
        v = b.vals[o]
        if v.rank == 4 and v.layout == PLAIN:
            v = b.as_nchw(v, o)
        out_vals.append(v.slot)
    nchw_shape = tuple(input_shape[i] for i in TO_NCHW) if len(input_shape) == 4 else tuple(input_shape)
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
