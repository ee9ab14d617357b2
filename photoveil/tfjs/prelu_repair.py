"""Graph rewrite applied before building: repair PReLUs broken by a TF.js converter fusion.

Works on the ``model.json`` node list only (no torch). Enabled by
``load_graph_model(..., repair_fused_prelu=True)`` for graphs known to carry the fusion.
"""
from __future__ import annotations

import base64
import json
from collections import defaultdict

from photoveil.tfjs.nodes import fused_ops, input_key


def repair_fused_prelu_nodes(nodes: list[dict]) -> list[dict]:
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
            consumers[input_key(i)].append(n)
    out = []
    for n in nodes:
        fused = fused_ops(n)
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
                    u["input"] = [relu_name if input_key(i) == n["name"] else i for i in u["input"]]
            continue
        out.append(n)
    return out
