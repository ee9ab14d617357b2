"""TF.js graph importer: ops vs a NumPy NHWC reference, splits, export, dequantisation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from photoveil.errors import UnsupportedOp
from photoveil.tfjs.graph import build_graph, load_graph_model
from photoveil.tfjs.weights_manifest import decode_weights, load_weights

B64 = {s: __import__("base64").b64encode(s.encode()).decode() for s in
       ("SAME", "VALID", "BiasAdd", "Relu", "Relu6", "NHWC")}


def _close(a, b, atol):
    assert a.shape == b.shape and (a - b).abs().max().item() <= atol, (a - b).abs().max().item()


def _const(name):
    return {"name": name, "op": "Const", "attr": {}}


def _tiny_model(rng):
    """A small NHWC graph with convs, fused ops, a skip connection, pooling and a head."""
    w = {
        "c1/w": rng.normal(size=(3, 3, 3, 4)).astype(np.float32) * 0.5,
        "c1/b": rng.normal(size=(4,)).astype(np.float32),
        "dw/w": rng.normal(size=(3, 3, 4, 2)).astype(np.float32) * 0.5,
        "bn/mul": rng.uniform(0.5, 1.5, size=(8,)).astype(np.float32),
        "bn/add": rng.normal(size=(8,)).astype(np.float32),
        "pw/w": rng.normal(size=(1, 1, 8, 4)).astype(np.float32) * 0.5,
        "pad/p": np.array([[0, 0], [1, 0], [0, 1], [0, 0]], np.int32),
        "alpha": rng.uniform(0.1, 0.3, size=(4,)).astype(np.float32),
        "six": np.array(6.0, np.float32),
        "axes": np.array([1, 2], np.int32),
        "fc/w": rng.normal(size=(4, 5)).astype(np.float32),
        "fc/b": rng.normal(size=(5,)).astype(np.float32),
        "shape": np.array([1, -1], np.int32),
    }
    s = {"strides": {"list": {"i": ["1", "2", "2", "1"]}}}
    nodes = [
        {"name": "x", "op": "Placeholder", "attr": {"shape": {"shape": {"dim": [{"size": "-1"}, {"size": "9"},
                                                                                 {"size": "8"}, {"size": "3"}]}}}},
        *[_const(k) for k in w],
        {"name": "c1", "op": "_FusedConv2D", "input": ["x", "c1/w", "c1/b"],
         "attr": {**s, "padding": {"s": B64["SAME"]}, "num_args": {"i": "1"},
                  "fused_ops": {"list": {"s": [B64["BiasAdd"], B64["Relu"]]}}}},
        {"name": "dw", "op": "DepthwiseConv2dNative", "input": ["c1", "dw/w"],
         "attr": {"strides": {"list": {"i": ["1", "1", "1", "1"]}}, "padding": {"s": B64["SAME"]}}},
        {"name": "bn_mul", "op": "Mul", "input": ["dw", "bn/mul"]},
        {"name": "bn_add", "op": "AddV2", "input": ["bn_mul", "bn/add"]},
        {"name": "pw", "op": "Conv2D", "input": ["bn_add", "pw/w"],
         "attr": {"strides": {"list": {"i": ["1", "1", "1", "1"]}}, "padding": {"s": B64["VALID"]}}},
        {"name": "prelu", "op": "Prelu", "input": ["pw", "alpha"]},
        {"name": "skip", "op": "Add", "input": ["prelu", "c1"]},
        {"name": "clip", "op": "Minimum", "input": ["skip", "six"]},
        {"name": "pad", "op": "Pad", "input": ["clip", "pad/p"]},
        {"name": "pool", "op": "MaxPool", "input": ["pad"],
         "attr": {"ksize": {"list": {"i": ["1", "3", "3", "1"]}}, **s, "padding": {"s": B64["SAME"]}}},
        {"name": "mean", "op": "Mean", "input": ["pool", "axes"], "attr": {"keep_dims": {"b": False}}},
        {"name": "fc", "op": "_FusedMatMul", "input": ["mean", "fc/w", "fc/b"],
         "attr": {"num_args": {"i": "1"}, "fused_ops": {"list": {"s": [B64["BiasAdd"]]}}}},
        {"name": "flat", "op": "Reshape", "input": ["pool", "shape"]},
        {"name": "probs", "op": "Softmax", "input": ["fc"]},
    ]
    manifest = [{"paths": ["w.bin"], "weights": [{"name": k, "shape": list(v.shape),
                                                   "dtype": "int32" if v.dtype == np.int32 else "float32"}
                                                  for k, v in w.items()]}]
    model = {"format": "graph-model", "modelTopology": {"node": nodes}, "weightsManifest": manifest}
    return model, w, b"".join(v.tobytes() for v in w.values())


def _same(x, k, s):
    """TF SAME padding of an NHWC array for kernel k, stride s (extra pixel at the end)."""
    pads = []
    for size in x.shape[1:3]:
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _conv_ref(x, w, s, padding, depthwise=False):
    kh, kw = w.shape[:2]
    if padding == "SAME":
        (t, b), (l, r) = _same(x, kh, s)
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    n, h, wd, c = x.shape
    oh, ow = (h - kh) // s + 1, (wd - kw) // s + 1
    patches = np.stack([x[:, i:i + s * oh:s, j:j + s * ow:s, :] for i in range(kh) for j in range(kw)], 3)
    patches = patches.reshape(n, oh, ow, kh, kw, c)
    if depthwise:  # out channel c*mult + m
        out = np.einsum("nhwijc,ijcm->nhwcm", patches, w)
        return out.reshape(n, oh, ow, -1)
    return np.einsum("nhwijc,ijco->nhwo", patches, w)


def _reference(x, w):
    c1 = np.maximum(_conv_ref(x, w["c1/w"], 2, "SAME") + w["c1/b"], 0)
    dw = _conv_ref(c1, w["dw/w"], 1, "SAME", depthwise=True)
    pw = _conv_ref(dw * w["bn/mul"] + w["bn/add"], w["pw/w"], 1, "VALID")
    prelu = np.where(pw > 0, pw, w["alpha"] * pw)
    clip = np.minimum(prelu + c1, 6.0)
    pad = np.pad(clip, ((0, 0), (1, 0), (0, 1), (0, 0)))
    (t, b), (l, r) = _same(pad, 3, 2)
    pp = np.pad(pad, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=-np.inf)
    oh, ow = (pp.shape[1] - 3) // 2 + 1, (pp.shape[2] - 3) // 2 + 1
    pool = np.max(np.stack([pp[:, i:i + 2 * oh:2, j:j + 2 * ow:2] for i in range(3) for j in range(3)]), 0)
    fc = pool.mean((1, 2)) @ w["fc/w"] + w["fc/b"]
    e = np.exp(fc - fc.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True), pool.reshape(pool.shape[0], -1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    rng = np.random.default_rng(0)
    model, w, blob = _tiny_model(rng)
    d = tmp_path_factory.mktemp("tiny")
    (d / "model.json").write_text(json.dumps(model))
    (d / "w.bin").write_bytes(blob)
    return d / "model.json", w


def test_graph_matches_numpy_reference(tiny):
    path, w = tiny
    g = load_graph_model(path, outputs=["probs", "flat"])
    x = np.random.default_rng(1).normal(size=(2, 9, 8, 3)).astype(np.float32)
    probs, flat = g(torch.from_numpy(x).permute(0, 3, 1, 2))
    ref_probs, ref_flat = _reference(x.astype(np.float64), {k: v.astype(np.float64) for k, v in w.items()})
    np.testing.assert_allclose(probs.detach().numpy(), ref_probs, atol=1e-5)
    # Reshape must see NHWC order even though activations are stored NCHW
    np.testing.assert_allclose(flat.detach().numpy(), ref_flat, atol=1e-4)
    # the scale/shift after the depthwise conv was folded into it (no separate Mul/AddV2 step)
    assert not any(op in ("Mul", "AddV2") for _, op, _ in g.layers())


def test_every_split_reproduces_full_graph(tiny):
    g = load_graph_model(tiny[0], outputs=["probs"])
    x = torch.randn(3, 3, 9, 8)
    full = g(x)
    multi = 0
    for k in range(1, len(g)):
        shallow, rest = g.split(k)
        h = shallow(x)
        multi += isinstance(h, tuple)
        _close(rest(h), full, 1e-6)
    assert multi > 0, "the skip connection should force multi-tensor cuts"
    assert g.clean_cuts() and all(not isinstance(g.split(k)[0](x), tuple) for k in g.clean_cuts())


def test_export_and_gradients(tiny):
    g = load_graph_model(tiny[0], outputs=["probs"])
    x = torch.randn(2, 3, 9, 8, requires_grad=True)
    g(x)[:, 0].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    ep = torch.export.export(g, (torch.randn(2, 3, 9, 8),))
    y = torch.randn(2, 3, 9, 8)
    _close(ep.module()(y), g(y), 1e-5)


def test_unsupported_op_names_op_and_node(tiny, tmp_path):
    model = json.loads(tiny[0].read_text())
    for n in model["modelTopology"]["node"]:
        if n["name"] == "clip":
            n["op"] = "FancyNewOp"
    (tmp_path / "model.json").write_text(json.dumps(model))
    (tmp_path / "w.bin").write_bytes((tiny[0].parent / "w.bin").read_bytes())
    with pytest.raises(UnsupportedOp, match=r"FancyNewOp.*'clip'"):
        load_graph_model(tmp_path / "model.json", outputs=["probs"])


def test_dequantisation_uint8_uint16_float16():
    real = np.array([-1.0, -0.25, 0.5, 2.0], np.float32)
    q8 = np.array([0, 30, 60, 120], np.uint8)
    q16 = np.array([0, 3000, 60000, 65535], np.uint16)
    f16 = real.astype(np.float16)
    manifest = [{"paths": ["a"], "weights": [
        {"name": "u8", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.025, "min": -1.0}},
        {"name": "u16", "shape": [4], "dtype": "float32", "quantization": {"dtype": "uint16", "scale": 1e-4, "min": -3.0}},
        {"name": "f16", "shape": [4], "dtype": "float32", "quantization": {"dtype": "float16", "original_dtype": "float32"}},
        {"name": "i32", "shape": [2], "dtype": "int32"}]}]
    blob = q8.tobytes() + q16.tobytes() + f16.tobytes() + np.array([7, -3], np.int32).tobytes()
    w = decode_weights(manifest, [blob])
    np.testing.assert_allclose(w["u8"], (q8 * 0.025 - 1.0).reshape(2, 2), rtol=1e-6)
    np.testing.assert_allclose(w["u16"], q16 * 1e-4 - 3.0, rtol=1e-6)
    np.testing.assert_array_equal(w["f16"], f16.astype(np.float32))
    assert w["u8"].dtype == np.float32 and w["i32"].tolist() == [7, -3]
    with pytest.raises(Exception, match="hold only"):
        decode_weights(manifest, [blob[:-4]])


def test_missing_shard_is_reported(tmp_path):
    with pytest.raises(Exception, match="missing"):
        load_weights([{"paths": ["nope.bin"], "weights": []}], tmp_path)


def test_build_graph_from_parsed_model_keeps_batch_free(tiny):
    model = json.loads(tiny[0].read_text())
    raw = (tiny[0].parent / "w.bin").read_bytes()
    w = decode_weights(model["weightsManifest"], [raw])
    g = build_graph(model, w, outputs=["flat"])
    assert g(torch.randn(4, 3, 9, 8)).shape[0] == 4  # Reshape [1,-1] kept the batch dim free
