"""The protection artifact format: one folder, one ExecuTorch program, one manifest.

Layout of an artifact folder (what ``photoveil export`` writes and ``photoveil artifacts
sign`` completes)::

    <folder>/<program>.pte     the ExecuTorch program (exactly one)
    <folder>/manifest.json     :class:`Manifest`: what the program is and how to feed it
    <folder>/model.sig         OpenSSF model-signing bundle over the folder (once signed)

Everything that reads or writes ``manifest.json`` goes through this module: the exporter
(:func:`write_manifest`), the on-device runtime and the signing code (:func:`open_artifact`,
:func:`verify_hash`), the server's artifact store and the demo. The *kind* of a program
(``generator``, ``shallow``, ``pmt-step``, ``fmd-step``) says which protector runs it and
which of its config fields are fixed inside the program (:data:`KINDS`).

Example::

    >>> art = open_artifact("artifacts/pmt-step")          # folder or its .pte
    >>> art.manifest.kind, art.manifest.split, art.manifest.params["steps"]
    ('pmt-step', 'block2', 100)
    >>> verify_hash(art.pte, art.manifest)                 # IntegrityError if modified
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from photoveil.errors import IntegrityError, NotFound

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "model.sig"
FORMAT = "photoveil-artifact/2"
# format 1 named the program kind "method" and the ExecuTorch entry points "methods"
_LEGACY_KEYS = {"method": "kind", "methods": "entry_points"}
_READABLE_FORMATS = ("photoveil-artifact/1", FORMAT)


# memory layouts of a program's 4-D (image / feature map) inputs and outputs: NCHW (the
# default, what ExecuTorch's Java Tensor passes), or NHWC (channels-last bytes of the same
# logical [N, C, H, W]: XNNPACK's own layout, so the program skips the conversions at its edges)
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class ProgramKind:
    """A kind of on-device program.

    Attributes:
        name: the manifest's ``kind``.
        protection: the protection method it serves (``generator`` | ``pmt`` | ``fmd``),
            None for a program that only computes features.
        entry_points: ExecuTorch methods of the program (``forward`` first).
        baked: protector config fields fixed inside the program (a phone cannot change
            them without a new export).
        host: protector config fields the host loop owns; the manifest records the
            exported defaults.
    """

    name: str
    protection: str | None
    entry_points: tuple[str, ...]
    baked: tuple[str, ...] = ()
    host: tuple[str, ...] = ()

    def params(self, config: Any) -> dict[str, Any]:
        """The ``baked`` + ``host`` fields of a protector ``config`` as JSON values."""
        return {k: _jsonable(getattr(config, k)) for k in (*self.baked, *self.host)}

    def baked_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """The baked fields recorded in a manifest's ``params`` (lists back to tuples)."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k in self.baked}

    def host_values(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k in self.host}


KINDS: dict[str, ProgramKind] = {k.name: k for k in (
    ProgramKind("generator", "generator", ("forward",), baked=("strength",)),
    ProgramKind("shallow", None, ("forward",)),
    ProgramKind("pmt-step", "pmt", ("forward", "features"),
                baked=("augment", "pool", "kernel", "kernel_length", "layers", "optimizer", "momentum", "match",
                       "steps_per_call", "highpass"),
                host=("steps", "step_size", "schedule", "final_step", "stop_loss", "init", "init_sigma",
                      "aug_sigma", "aug_affine")),
    ProgramKind("fmd-step", "fmd", ("forward", "prepare"),
                baked=("eps", "lam", "lam_emb", "feature_loss", "mu", "diversity", "kernel", "kernel_length", "update"),
                host=("steps", "alpha", "alpha_schedule")),
)}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def get_kind(name: str) -> ProgramKind:
    try:
        return KINDS[name]
    except KeyError:
        raise NotFound(f"unknown program kind {name!r}; kinds: {', '.join(KINDS)}") from None


@dataclass
class Manifest:
    """What an artifact's program is (``manifest.json``).

    Attributes:
        kind: program kind (a key of :data:`KINDS`).
        program: file name of the .pte in the folder.
        model_id: the model the program was made from (``+``-joined for MR-PMT).
        version: artifact version; photoveil_version: the exporter's version.
        compatible_model_version: the server-side model version (``ListModels``) its uploads
            are made for; empty: any (set by ``photoveil artifacts publish``).
        inputs / outputs: ``[{"name", "shape", "dtype", "layout"?}]`` in call order.
        entry_points: ExecuTorch methods of the program.
        layout / normalisation: memory layout (:data:`LAYOUTS`) of the 4-D inputs and outputs,
            value range of image inputs.
        channel_order: order of the image channels (``RGB``; ``L`` for one-channel programs).
        split: split point of the model (shallow and step programs), else None.
        alignment: face alignment the model's inputs expect: ``template`` (arcface | dlib)
            and ``zoom``; written by export since format 2 also ``size`` ([H, W]),
            ``landmarks`` (names, in order), ``points`` (their target pixel positions in the
            crop, pixel centres at integers) and ``transform`` (how to map detected
            landmarks onto them). Older manifests hold only template and zoom.
        params: the kind's baked and host settings (:attr:`ProgramKind.params`) and any
            extra values a client needs.
        sha256 / pte_bytes: digest and size of the .pte.
        quantization, backend, delegates, non_delegated_ops: how it was lowered.
    """

    kind: str = ""
    program: str = ""
    sha256: str = ""
    pte_bytes: int = 0
    model_id: str = ""
    version: str = ""
    compatible_model_version: str = ""
    photoveil_version: str = ""
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    entry_points: list[str] = field(default_factory=lambda: ["forward"])
    layout: str = "NCHW"
    normalisation: dict[str, Any] = field(default_factory=dict)
    channel_order: str = "RGB"
    split: str | None = None
    alignment: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    quantization: str = "fp32"
    backend: str = "xnnpack"
    delegates: int = 0
    non_delegated_ops: dict[str, int] = field(default_factory=dict)
    torch_version: str = ""
    executorch_version: str = ""
    format: str = FORMAT

    @property
    def input_shapes(self) -> list[list[int]]:
        return [list(i["shape"]) for i in self.inputs]

    @property
    def program_kind(self) -> ProgramKind | None:
        return KINDS.get(self.kind)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> Manifest:
        """Parse a manifest object (format 1 or 2); unknown keys are dropped, missing ones
        take their defaults (what needs them checks them: :func:`verify_hash` an empty
        ``sha256``, :func:`open_artifact` an empty ``program``).

        Raises:
            IntegrityError: not an object, or an unknown format.
        """
        if not isinstance(data, dict):
            raise IntegrityError(f"{where} is not a JSON object")
        data = {_LEGACY_KEYS.get(k, k): v for k, v in data.items()}
        fmt = data.get("format", _READABLE_FORMATS[0])
        if fmt not in _READABLE_FORMATS:
            raise IntegrityError(f"{where} has format {fmt!r}; this photoveil reads {', '.join(_READABLE_FORMATS)}")
        data["format"] = FORMAT
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise IntegrityError(f"{where} is not valid JSON ({exc})") from None
        return cls.from_dict(data, where)


@dataclass(frozen=True)
class Artifact:
    """An artifact folder on disk: its program, manifest (parsed and as written)."""

    folder: Path
    pte: Path
    manifest: Manifest
    manifest_text: str

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_FILE

    @property
    def signature(self) -> Path:
        return self.folder / SIGNATURE_FILE


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_hash(pte: str | os.PathLike | bytes, manifest: Manifest, name: str | None = None) -> None:
    """Raise IntegrityError unless the program (a path or its bytes) has the manifest's sha256."""
    if isinstance(pte, bytes):
        digest, name = hashlib.sha256(pte).hexdigest(), name or manifest.program
    else:
        digest, name = sha256_file(pte), name or Path(pte).name
    if digest != manifest.sha256:
        raise IntegrityError(f"{name}: sha256 {digest} does not match its manifest's {manifest.sha256 or '(none)'}; "
                             "the program was modified or belongs to another manifest")


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> Path:
    """Write ``folder/manifest.json`` (atomically: a reader never sees half a manifest)."""
    path = Path(folder) / MANIFEST_FILE
    tmp = path.with_name(f".{MANIFEST_FILE}.tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(folder: str | os.PathLike) -> Manifest:
    """The manifest of an artifact folder (NotFound when there is none)."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise NotFound(f"no {MANIFEST_FILE} in {folder}; export the program with `photoveil export ...`")
    return Manifest.from_json(_read_text(path), f"{Path(folder).name}/{MANIFEST_FILE}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{path.parent.name}/{path.name} is not UTF-8 text ({exc})") from None


def open_artifact(path: str | os.PathLike, strict: bool = False) -> Artifact:
    """The artifact at ``path`` (its folder, or the .pte inside it).

    ``strict`` (signing, publishing) requires a folder holding exactly one .pte, the one
    the manifest names (if it names one).

    Raises:
        NotFound: nothing at ``path``, no manifest, or no program named by it.
        IntegrityError: the manifest does not parse, or (``strict``) the folder's shape is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise NotFound(f"no artifact at {path}; give an artifact folder (program .pte + {MANIFEST_FILE}) or its .pte")
    folder = path if path.is_dir() else path.parent
    manifest_path = folder / MANIFEST_FILE
    programs = sorted(folder.glob("*.pte")) if strict else []
    if strict:
        if not path.is_dir():
            raise NotFound(f"no artifact folder at {path}; give the folder `photoveil export` wrote")
        if len(programs) != 1:
            raise IntegrityError(f"artifact {folder.name!r} holds {len(programs)} .pte files; exactly one is expected")
        if not manifest_path.is_file():
            raise IntegrityError(f"artifact {folder.name!r} has no {MANIFEST_FILE}; an artifact is a .pte plus "
                                 "its manifest")
    if not manifest_path.is_file():
        raise NotFound(f"no {MANIFEST_FILE} beside {path}; export the program with `photoveil export ...`")
    text = _read_text(manifest_path)
    manifest = Manifest.from_json(text, f"artifact {folder.name!r}: {MANIFEST_FILE}")
    if strict:
        pte = programs[0]
        if manifest.program and manifest.program != pte.name:
            raise IntegrityError(f"artifact {folder.name!r}: {MANIFEST_FILE} names {manifest.program!r}, not the "
                                 f"program {pte.name!r} that is there")
    else:
        pte = path if path.suffix == ".pte" else folder / manifest.program
        if not manifest.program and path.is_dir() or not pte.is_file():
            raise NotFound(f"no program {manifest.program!r} in {folder} (named by its {MANIFEST_FILE})")
    return Artifact(folder, pte, manifest, text)
