"""Read TF.js weight manifests (``weightsManifest`` of a model.json, or a face-api
``*-weights_manifest.json``) and their binary shards into numpy arrays.

A manifest is a list of groups ``{"paths": [shard, ...], "weights": [entry, ...]}``; the
shards of a group are concatenated and each entry takes ``prod(shape)`` values in order.
An entry's ``quantization`` says how it is stored:

* ``{"dtype": "uint8"|"uint16", "scale": s, "min": m}`` -> ``q * s + m`` (affine quantisation),
* ``{"dtype": "float16", "original_dtype": ...}`` -> half floats widened,

and the result is cast to the entry's ``dtype`` (``float32`` / ``int32`` / ``bool``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from photoveil.errors import InvalidInput

_STORED = {"float32": np.float32, "int32": np.int32, "bool": np.bool_, "uint8": np.uint8,
           "uint16": np.uint16, "float16": np.float16, "int8": np.int8, "int16": np.int16}


def _np_dtype(name: str, what: str) -> np.dtype:
    try:
        return np.dtype(_STORED[name])
    except KeyError:
        raise InvalidInput(f"{what}: unsupported weight dtype {name!r}; accepted: {sorted(_STORED)}") from None


def decode_weights(manifest: list[dict], shards: list[bytes]) -> dict[str, np.ndarray]:
    """Decode one manifest given the bytes of every group's concatenated shards (one per group)."""
    out: dict[str, np.ndarray] = {}
    for group, buf in zip(manifest, shards, strict=True):
        offset = 0
        for entry in group["weights"]:
            name, shape = entry["name"], [int(d) for d in entry["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = entry.get("quantization")
            target = _np_dtype(entry["dtype"], name)
            stored = _np_dtype(quant["dtype"], name) if quant else target
            nbytes = count * stored.itemsize
            if offset + nbytes > len(buf):
                raise InvalidInput(f"weight {name!r} needs bytes {offset}..{offset + nbytes} "
                                   f"but its shards hold only {len(buf)}")
            raw = np.frombuffer(buf, dtype=stored.newbyteorder("<"), count=count, offset=offset)
            offset += nbytes
            if quant and "scale" in quant:
                # affine: real = q * scale + min (computed in float64, then cast)
                arr = raw.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
            else:
                arr = raw
            out[name] = np.asarray(arr, dtype=target).reshape(shape).copy()
        if offset != len(buf):
            raise InvalidInput(f"weight shards {group['paths']} hold {len(buf)} bytes but the "
                               f"manifest describes {offset}")
    return out


def load_weights(manifest: list[dict], base_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every shard named in ``manifest`` (relative to ``base_dir``) and decode it."""
    base = Path(base_dir)
    shards = []
    for group in manifest:
        parts = []
        for rel in group["paths"]:
            path = base / rel
            if not path.is_file():
                raise InvalidInput(f"weight shard {path} is missing (named in the manifest)")
            parts.append(path.read_bytes())
        shards.append(b"".join(parts))
    return decode_weights(manifest, shards)


def load_manifest_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a face-api style ``*-weights_manifest.json`` and the shards beside it."""
    path = Path(path)
    manifest = json.loads(path.read_text())
    return load_weights(manifest, path.parent)
