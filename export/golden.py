"""Golden vectors: fixed inputs and the expected outputs of an artifact's program.

``photoveil export ... --golden`` writes them into a folder beside the artifact (the
artifact folder itself holds only what is signed). A port of the host loop (Kotlin/Java on
Android) is correct when, fed these inputs, it reproduces these outputs on the device's
ExecuTorch runtime within the tolerances; :func:`check_golden` does the same on the Python
runtime here.

Layout of a golden folder::

    golden.json            what follows, with shapes, dtypes, sha256 and tolerances
    image.png              the fixed face (a shipped LFW photo, centre crop at the program size)
    <name>.bin             raw little-endian tensors (float32 / int64), row-major

What is recorded, per program kind (inputs are the values the host loop of
:mod:`photoveil.client.runtime` drew with ``seed``, so the random draws are fixed too):

* ``pmt-step``: ``x`` (the image), ``x_t0`` and ``m0`` (the start and the zero optimizer
  state, both carried from call to call: outputs 0 and 1 are the next call's inputs 0 and 1),
  the ``refs`` (``x``, or the clean taps with ``match="clean"``), per-call ``noise``,
  ``theta`` and ``alpha`` (stacked over the calls), ``x_t1`` after one call, ``x_tN`` after
  all, and the ``features`` entry point on ``x_tN``;
* ``fmd-step``: ``prepare(x) -> (logits, feat_x, emb_x)``, ``y``, ``x_star0`` and ``m0`` (the
  zero momentum), per-step ``alpha`` (and ``theta`` with diversity), one step, N steps (the
  loop carries ``(x_star, m)``: a loop whose ``carry`` is a list feeds the program's first
  outputs back as those inputs);
* ``generator`` / ``shallow``: ``forward(x)``.

Plus the exact wire bytes of the Identify requests a phone sends for the result (image
tensor, and shallow features where the program has them), so a client can check its
protobuf encoding byte for byte.

Tolerances: a single forward call must agree within ``atol``/``rtol`` everywhere; a step of
a signed-gradient method may flip the sign of a near-zero gradient element on another CPU,
which moves that element by one step size, so step checks allow a small fraction of
elements outside ``atol`` (``min_fraction``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from photoveil.artifact import open_artifact
from photoveil.errors import IntegrityError, InvalidInput, NotFound

FORMAT = "photoveil-golden/1"
GOLDEN_FILE = "golden.json"
IMAGE_FILE = "image.png"
DEFAULT_STEPS = 5
DEFAULT_SEED = 0
# the shipped face the vectors start from (photoveil/assets/faces, LFW deep-funneled 250x250)
GOLDEN_FACE = ("Adam_Sandler", "Adam_Sandler_0001.jpg")
EXACT = {"atol": 1e-4, "rtol": 1e-4, "min_fraction": 1.0}
ONE_STEP = {"atol": 1e-5, "rtol": 0.0, "min_fraction": 0.999}
FULL_RUN = {"atol": 1e-4, "rtol": 0.0, "min_fraction": 0.99}
TOP_K = 5


def golden_dir_for(artifact: str | os.PathLike) -> Path:
    """Default folder for an artifact's golden vectors: ``<artifact>.golden`` beside it
    (no ``manifest.json`` in it, so the server's artifact store does not publish it)."""
    art = Path(artifact)
    return art.with_name(art.name + ".golden")


def _golden_image(channels: int, h: int, w: int) -> tuple[torch.Tensor, Any]:
    """The fixed face at the program size, quantised to 8 bits: ``([1,C,H,W] in [0,1], PIL image)``."""
    from PIL import Image

    from photoveil.facemodels.align import center_crop, load_image
    from photoveil.paths import ASSETS

    face = load_image(ASSETS / "faces" / GOLDEN_FACE[0] / GOLDEN_FACE[1])
    crop = center_crop(face, h) if h == w else torch.nn.functional.interpolate(
        face[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    array = (crop.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    pil = Image.fromarray(array, "RGB")
    if channels == 1:
        pil = pil.convert("L")
    data = np.asarray(pil, dtype=np.uint8)
    data = data[:, :, None] if data.ndim == 2 else data
    return torch.from_numpy(data.copy()).permute(2, 0, 1).float().div(255.0)[None], pil


class _Recorder:
    """Wraps a protector's step: records every call's inputs and output."""

    def __init__(self, step):
        self.step, self.calls = step, []

    def __call__(self, *tensors):
        out = self.step(*tensors)
        outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        self.calls.append(([t.detach().clone() for t in tensors], [o.detach().clone() for o in outs]))
        return out


class _Writer:
    def __init__(self, folder: Path):
        self.folder, self.tensors = folder, {}

    def put(self, name: str, t: torch.Tensor) -> str:
        t = t.detach().cpu().contiguous()
        dtype = {torch.float32: "float32", torch.int64: "int64"}.get(t.dtype)
        if dtype is None:
            t, dtype = t.float(), "float32"
        data = t.numpy().astype("<f4" if dtype == "float32" else "<i8").tobytes()
        (self.folder / f"{name}.bin").write_bytes(data)
        self.tensors[name] = {"file": f"{name}.bin", "shape": list(t.shape), "dtype": dtype,
                              "sha256": hashlib.sha256(data).hexdigest()}
        return name

    def get(self, name: str) -> torch.Tensor:
        return _load(self.folder, self.tensors[name])

    def raw(self, name: str, data: bytes) -> dict:
        (self.folder / name).write_bytes(data)
        return {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_golden(artifact: str | os.PathLike, out: str | os.PathLike | None = None, steps: int = DEFAULT_STEPS,
                 seed: int = DEFAULT_SEED) -> Path:
    """Run an artifact's program on the Python runtime from fixed inputs and write the
    golden folder (default :func:`golden_dir_for`); returns its ``golden.json``."""
    from photoveil.client.runtime import PteProgram, load_protector

    if not isinstance(steps, int) or steps < 1:
        raise InvalidInput(f"golden steps must be an int >= 1, got {steps!r}")
    art = open_artifact(artifact)
    m = art.manifest
    folder = Path(out) if out is not None else golden_dir_for(art.folder)
    if folder.resolve() == art.folder.resolve():
        raise InvalidInput("golden vectors go beside the artifact, not into it (the signature covers the whole folder)")
    folder.mkdir(parents=True, exist_ok=True)
    _, c, h, w = m.input_shapes[0]
    x, pil = _golden_image(c, h, w)
    x = x.expand(m.input_shapes[0][0], -1, -1, -1).contiguous()
    pil.save(folder / IMAGE_FILE, format="PNG")
    wr = _Writer(folder)
    wr.put("x", x)
    checks: list[dict] = []
    result = "x"
    if m.kind in ("generator", "shallow"):
        result = wr.put("output", PteProgram(art.folder)(x)[0])
        checks.append({"name": "forward", "entry": "forward", "inputs": ["x"], "outputs": [result],
                       "tolerance": EXACT})
    elif m.kind in ("pmt-step", "fmd-step"):
        prot = load_protector(art.folder, seed=seed, steps=steps)
        rec = prot.step = _Recorder(prot.step)
        prot.protect(x)
        (first_in, first_out), last_out = rec.calls[0], rec.calls[-1][1]
        names = [i["name"] for i in m.inputs]
        if m.kind == "pmt-step":  # (x_t, m, *refs, noise, theta, alpha): x_t and m carried
            carry = [wr.put(f"{names[0]}0", first_in[0]), wr.put(f"{names[1]}0", first_in[1])]
            refs = names[2:-3]
            fixed = ["x"] if refs == ["x"] else [wr.put(r, t) for r, t in zip(refs, first_in[2:-3])]
            per_step = [wr.put(n, torch.stack([a[i] for a, _ in rec.calls]))
                        for n, i in (("noise", -3), ("theta", -2), ("alpha", -1))]
        else:  # (x_star, m, x, feat_x, emb_x, y, [theta,] alpha): x_star and the momentum carried
            logits, feat_x, emb_x = PteProgram(art.folder)(x, entry="prepare")[:3]
            checks.append({"name": "prepare", "entry": "prepare", "inputs": ["x"],
                           "outputs": [wr.put("logits", logits), wr.put("feat_x", feat_x), wr.put("emb_x", emb_x)],
                           "tolerance": EXACT})
            carry = [wr.put(f"{names[0]}0", first_in[0]), wr.put("m0", first_in[1])]
            fixed = ["x", "feat_x", "emb_x", wr.put("y", first_in[5])]
            per_step = [wr.put(n, torch.stack([a[i] for a, _ in rec.calls])) for i, n in enumerate(names)
                        if n in ("alpha", "theta")]
        one = wr.put(f"{names[0]}1", first_out[0])
        result = wr.put(f"{names[0]}N", last_out[0])
        step0 = [*carry, *fixed, *[f"{p}[0]" for p in per_step]]
        checks.append({"name": "one_step", "entry": "forward", "inputs": step0, "outputs": [one],
                       "tolerance": ONE_STEP})
        checks.append({"name": "full_run", "loop": {"entry": "forward", "carry": carry if len(carry) > 1 else carry[0],
                                                    "fixed": fixed, "per_step": per_step, "steps": len(rec.calls)},
                       "outputs": [result], "tolerance": FULL_RUN})
    else:
        raise InvalidInput(f"no golden vectors for program kind {m.kind!r}")
    requests = {"identify_image": _image_request(wr, m, result)}
    features = None
    if m.kind == "pmt-step":
        features = wr.put("features", PteProgram(art.folder)(wr.get(result), entry="features")[0])
        checks.append({"name": "features", "entry": "features", "inputs": [result], "outputs": [features],
                       "tolerance": EXACT})
    elif m.kind == "shallow":
        features = result
    if features is not None and m.split:
        requests["identify_features"] = _features_request(wr, m, features)
    doc = {"format": FORMAT, "artifact": {"kind": m.kind, "program": m.program, "sha256": m.sha256,
                                          "model_id": m.model_id, "split": m.split},
           "seed": seed, "steps": steps if m.kind.endswith("-step") else None,
           "program_steps": m.params.get("steps"),
           "image": {"file": IMAGE_FILE, "tensor": "x", "decode": "RGB (or grey) / 255, NCHW float32"},
           "tensors": wr.tensors, "checks": checks, "requests": requests}
    path = folder / GOLDEN_FILE
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def _image_request(wr: _Writer, m, name: str) -> dict:
    from photoveil.v1 import recognition_pb2 as pb
    from photoveil.v1 import tensor_pb2 as tpb

    t = _fp32(wr.get(name), "image")
    req = pb.IdentifyRequest(model_id=m.model_id, input=tpb.Input(tensor=t), top_k=TOP_K)
    return {"rpc": "Identify", "model_id": m.model_id, "tensor": name, "top_k": TOP_K,
            **wr.raw("identify_image.request.bin", req.SerializeToString(deterministic=True))}


def _features_request(wr: _Writer, m, name: str) -> dict:
    from photoveil.v1 import recognition_pb2 as pb
    from photoveil.v1 import tensor_pb2 as tpb

    feats = tpb.Features(split_point=m.split, tensor=_fp32(wr.get(name), "features"))
    req = pb.IdentifyRequest(model_id=m.model_id, input=tpb.Input(features=feats), top_k=TOP_K)
    return {"rpc": "Identify", "model_id": m.model_id, "split_point": m.split, "tensor": name, "top_k": TOP_K,
            **wr.raw("identify_features.request.bin", req.SerializeToString(deterministic=True))}


def _fp32(t: torch.Tensor, name: str):
    from photoveil.v1 import tensor_pb2 as tpb

    t = t.detach().float().contiguous()
    return tpb.Tensor(name=name, datatype="FP32", shape=list(t.shape), raw_contents=t.numpy().astype("<f4").tobytes())


def _load(folder: Path, entry: dict) -> torch.Tensor:
    data = (folder / entry["file"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise IntegrityError(f"golden tensor {entry['file']} does not match its sha256 in {GOLDEN_FILE}")
    dtype = "<f4" if entry["dtype"] == "float32" else "<i8"
    return torch.from_numpy(np.frombuffer(data, dtype=dtype).copy()).reshape(entry["shape"])


def read_golden(folder: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(golden.json, name -> tensor)``; IntegrityError on a changed file."""
    folder = Path(folder)
    path = folder / GOLDEN_FILE
    if not path.is_file():
        raise NotFound(f"no {GOLDEN_FILE} in {folder}; write one with `photoveil export ... --golden`")
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT:
        raise IntegrityError(f"{path} has format {doc.get('format')!r}; this photoveil reads {FORMAT}")
    return doc, {name: _load(folder, e) for name, e in doc["tensors"].items()}


def _arg(tensors: dict[str, torch.Tensor], ref: str, step: int | None = None) -> torch.Tensor:
    if ref.endswith("]"):
        name, index = ref[:-1].split("[")
        return tensors[name][int(index)]
    return tensors[ref] if step is None else tensors[ref][step]


def compare(got: torch.Tensor, want: torch.Tensor, tolerance: dict) -> dict:
    """How ``got`` agrees with ``want``: max abs error, fraction of elements within tolerance, ok."""
    got, want = got.detach().float(), want.detach().float()
    if tuple(got.shape) != tuple(want.shape):
        return {"ok": False, "reason": f"shape {tuple(got.shape)} != {tuple(want.shape)}"}
    err = (got - want).abs()
    within = (err <= tolerance["atol"] + tolerance["rtol"] * want.abs()).float().mean().item()
    return {"ok": within >= tolerance["min_fraction"], "max_abs": err.max().item(), "within": within}


def check_golden(golden: str | os.PathLike, artifact: str | os.PathLike) -> list[dict]:
    """Re-run every check of a golden folder on the artifact's program (Python ExecuTorch
    runtime); one record per check. Raises IntegrityError when one fails or the golden
    vectors belong to another program."""
    from photoveil.client.runtime import PteProgram

    doc, tensors = read_golden(golden)
    program = PteProgram(artifact)
    if doc["artifact"]["sha256"] != program.manifest.sha256:
        raise IntegrityError(f"golden vectors {golden} were written for program sha256 {doc['artifact']['sha256']}, "
                             f"not {program.manifest.sha256}")
    records = []
    for check in doc["checks"]:
        if "loop" in check:
            loop = check["loop"]
            names = [loop["carry"]] if isinstance(loop["carry"], str) else list(loop["carry"])
            carried = [tensors[n] for n in names]  # the first outputs feed the next call's first inputs
            for i in range(loop["steps"]):
                args = [tensors[f] for f in loop["fixed"]] + [tensors[p][i] for p in loop["per_step"]]
                carried = program(*carried, *args, entry=loop["entry"])[:len(names)]
            outs = [carried[0]]
        else:
            outs = program(*[_arg(tensors, a) for a in check["inputs"]], entry=check["entry"])
        for name, got in zip(check["outputs"], outs):
            records.append({"check": check["name"], "output": name, **compare(got, tensors[name], check["tolerance"])})
    bad = [r for r in records if not r["ok"]]
    if bad:
        raise IntegrityError("golden vectors do not reproduce: " + "; ".join(
            f"{r['check']}/{r['output']}: {r.get('reason') or 'max abs %.3g, %.4f within' % (r['max_abs'], r['within'])}"
            for r in bad))
    return records
