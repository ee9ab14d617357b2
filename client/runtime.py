"""Run exported protection programs (.pte) with the ExecuTorch runtime, behind the same
protector API as eager PyTorch.

An artifact is a folder holding one ``<program>.pte`` and its ``manifest.json`` (written by
``photoveil export``). :class:`PteProgram` checks the manifest's sha256 against the .pte
(``IntegrityError`` on mismatch) before anything is loaded, then runs its methods.

The protectors subclass the eager ones, so presets, validation, batching, seeding and the
host loop are literally the same code; only the model calls go to the program:

* :class:`PteGenerator` — ``protect(images)`` runs the generator program;
* :class:`PtePMT` — the host draws ``x~_0`` and each step's augmentation noise / affine
  matrices exactly like :class:`~photoveil.client.protect.pmt.PMTProtector` and calls the
  ``pmt-step`` program ``steps`` times; ``features()`` runs the program's ``features``
  method on the result;
* :class:`PteFMD` — ``prepare`` gives the clean logits / feature map, then the ``fmd-step``
  program runs ``steps`` times;
* :class:`PteShallow` — ``features(images)`` of a ``shallow`` program.

Programs have a fixed input shape (batch and size in the manifest); images of another size
are rejected with the size the program takes, and batches are run in program-sized chunks.
Hyper-parameters baked into a step program (step size, augmentation kind, smoothing kernel,
eps, ...) come from the manifest; host-side ones (steps, seed, init, noise std) can be
overridden.

Example::

    >>> pmt = PtePMT("artifacts/pmt-step", seed=0)      # folder with pmt-step.pte + manifest.json
    >>> protected = pmt.protect(faces)                   # [N,3,H,W] at the program's H, W
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from photoveil.client.protect.base import Protector
from photoveil.client.protect.fmd import FMDConfig, FMDProtector
from photoveil.client.protect.generator import GeneratorConfig, GeneratorProtector
from photoveil.client.protect.pmt import PMTConfig, PMTProtector
from photoveil.errors import IntegrityError, InvalidInput, NotFound

MANIFEST = "manifest.json"


def set_threads(n: int) -> int:
    """Size of the ExecuTorch (XNNPACK) thread pool; returns the previous size."""
    from executorch.extension.pybindings import portable_lib

    if not isinstance(n, int) or n < 1:
        raise InvalidInput(f"threads must be an int >= 1, got {n!r}")
    old = portable_lib._threadpool_get_thread_count()
    portable_lib._unsafe_reset_threadpool(n)
    return old


def read_artifact(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """``(pte path, manifest)`` of an artifact folder, or of a .pte inside one.

    Raises:
        NotFound: no manifest.json / no program there.
        IntegrityError: the manifest is not a JSON object.
    """
    path = Path(path)
    if not path.exists():
        raise NotFound(f"no artifact at {path}; give an artifact folder (program .pte + {MANIFEST}) or its .pte")
    folder = path if path.is_dir() else path.parent
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise NotFound(f"no {MANIFEST} beside {path}; export the program with `photoveil export ...`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"{manifest_path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise IntegrityError(f"{manifest_path} is not a JSON object")
    pte = path if path.suffix == ".pte" else folder / str(manifest.get("program", ""))
    if not pte.is_file():
        raise NotFound(f"no program {pte.name!r} in {folder} (named by its {MANIFEST})")
    return pte, manifest


class PteProgram:
    """A verified, loaded ExecuTorch program.

    Args:
        artifact: artifact folder or its .pte.
        verify: check the manifest's sha256 (and size) against the .pte bytes first.
        expect_method: raise ``InvalidInput`` unless the manifest's ``method`` is this.

    ``program(*tensors, method="forward")`` returns the outputs as a list of tensors.
    """

    def __init__(self, artifact: str | os.PathLike, verify: bool = True, expect_method: str | None = None):
        from executorch.runtime import Runtime

        self.path, self.manifest = read_artifact(artifact)
        # keep the bytes alive: the runtime reads the program from this buffer
        self._data = self.path.read_bytes()
        if verify:
            digest = hashlib.sha256(self._data).hexdigest()
            want = str(self.manifest.get("sha256", ""))
            if digest != want:
                raise IntegrityError(f"{self.path.name}: sha256 {digest} does not match the manifest's {want or '(none)'}; "
                                     "the program was modified or belongs to another manifest")
        method = self.manifest.get("method")
        if expect_method and method != expect_method:
            raise InvalidInput(f"{self.path} is a {method!r} program; this needs a {expect_method!r} program "
                               f"(`photoveil export {expect_method} ...`)")
        self._program = Runtime.get().load_program(self._data)
        self._methods: dict[str, Any] = {}

    @property
    def method_names(self) -> set[str]:
        return set(self._program.method_names)

    @property
    def input_shapes(self) -> list[list[int]]:
        return [list(i["shape"]) for i in self.manifest.get("inputs", [])]

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest.get("params", {}))

    def _method(self, name: str):
        if name not in self._methods:
            if name not in self.method_names:
                raise NotFound(f"{self.path.name} has no method {name!r}; methods: {', '.join(sorted(self.method_names))}")
            self._methods[name] = self._program.load_method(name)
        return self._methods[name]

    def __call__(self, *tensors: torch.Tensor, method: str = "forward") -> list[torch.Tensor]:
        args = [t.contiguous() for t in tensors]
        return list(self._method(method).execute(args))


def _chunks(images: torch.Tensor, n: int):
    """``images`` in chunks of exactly ``n`` (the last padded by repeating its last image);
    yields ``(chunk, real_count)``."""
    for i in range(0, len(images), n):
        chunk = images[i:i + n]
        real = len(chunk)
        if real < n:
            chunk = torch.cat([chunk, chunk[-1:].expand(n - real, *chunk.shape[1:])])
        yield chunk.contiguous(), real


class _ProgramShape:
    """Mixin: the program's fixed image shape (batch, C, H, W) enforced on ``protect``."""

    program: PteProgram
    image_input = 0

    def _program_shape(self) -> list[int]:
        return self.program.input_shapes[self.image_input]

    def validate(self, images: Any) -> None:
        Protector.validate(self, images)
        _, c, h, w = self._program_shape()
        if tuple(images.shape[2:]) != (h, w):
            raise InvalidInput(f"{self.program.path.name} takes {h}x{w} images (exported at that size), got "
                               f"{tuple(images.shape[2:])[0]}x{tuple(images.shape[2:])[1]}; resize, or export "
                               f"the program with --size {images.shape[2]}")

    def _run_chunked(self, fn, images: torch.Tensor, rng) -> torch.Tensor:
        n = self._program_shape()[0]
        return torch.cat([fn(chunk, rng)[:real] for chunk, real in _chunks(images, n)])


def _check_baked(config, baked: dict[str, Any], path: Path) -> None:
    wrong = {k: (getattr(config, k), v) for k, v in baked.items() if getattr(config, k) != v}
    if wrong:
        detail = ", ".join(f"{k}={have!r} (program: {want!r})" for k, (have, want) in wrong.items())
        raise InvalidInput(f"{path.name} was exported with other settings: {detail}; these are fixed in the "
                           "program: re-export it, or leave them at the program's values")


class PteGenerator(_ProgramShape, GeneratorProtector):
    """The generator protector on a ``generator`` program (``strength`` is baked in)."""

    def __init__(self, artifact: str | os.PathLike, config: GeneratorConfig | None = None, verify: bool = True,
                 **overrides: Any):
        self.program = PteProgram(artifact, verify, expect_method="generator")
        strength = float(self.program.params.get("strength", 1.0))
        if config is None:
            config = GeneratorConfig(**{"checkpoint": str(self.program.path), "strength": strength, **overrides})
        _check_baked(config, {"strength": strength}, self.program.path)
        Protector.__init__(self, config)
        self.meta = self.program.manifest
        self.in_channels = self._program_shape()[1]
        self.net = None

    def _protect(self, images, rng):
        return self._run_chunked(lambda x, _rng: self.program(x.float())[0], images, rng)


class PteShallow:
    """Upload features of a ``shallow`` program: ``features(images) -> E_c(images)``."""

    def __init__(self, artifact: str | os.PathLike, verify: bool = True):
        self.program = PteProgram(artifact, verify, expect_method="shallow")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        shape = self.program.input_shapes[0]
        if images.dim() != 4 or list(images.shape[1:]) != shape[1:]:
            raise InvalidInput(f"{self.program.path.name} takes images [N,{','.join(map(str, shape[1:]))}], "
                               f"got {tuple(images.shape)}")
        return torch.cat([self.program(c)[0][:r] for c, r in _chunks(images.float(), shape[0])])


class _PteStep:
    """Callable standing in for PMTStep / FMDStep: runs the program's ``forward``."""

    def __init__(self, program: PteProgram, **attrs: Any):
        self.program = program
        self.__dict__.update(attrs)
        self.calls = 0

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.program(*tensors)[0]


PMT_BAKED = ("step_size", "augment", "pool", "kernel", "kernel_length", "layers")
PMT_HOST = ("steps", "init", "init_sigma", "aug_sigma", "aug_affine")


class PtePMT(_ProgramShape, PMTProtector):
    """PMT on a ``pmt-step`` program: the eager protector's host loop, program steps.

    Args:
        artifact: the ``pmt-step`` artifact.
        config: a full :class:`PMTConfig` (must agree with the program's baked settings);
            default: the manifest's settings with ``overrides`` (``steps``, ``seed``,
            ``init``, ``init_sigma``, ``aug_sigma``, ``aug_affine``, ``progress``) applied.
    """

    def __init__(self, artifact: str | os.PathLike, config: PMTConfig | None = None, verify: bool = True,
                 **overrides: Any):
        self.program = PteProgram(artifact, verify, expect_method="pmt-step")
        p = self.program.params
        baked = {k: (tuple(p[k]) if k == "layers" else p[k]) for k in PMT_BAKED if k in p}
        if config is None:
            fixed = set(overrides) & set(PMT_BAKED)
            if fixed:
                _check_baked(PMTConfig(**{**baked, **{k: overrides[k] for k in fixed}}), baked, self.program.path)
            config = PMTConfig(**{**baked, **{k: p[k] for k in PMT_HOST if k in p}, **overrides})
        _check_baked(config, baked, self.program.path)
        Protector.__init__(self, config)
        self.models = []
        self.step = _PteStep(self.program, alpha=config.step_size / 255.0)

    def _protect(self, images, rng):
        return self._run_chunked(super()._protect, images, rng)

    def features_of(self, protected: torch.Tensor, model: int = 0) -> torch.Tensor:
        if model != 0:
            raise InvalidInput("a pmt-step program carries the features of its first authorized model only (model=0)")
        n = self._program_shape()[0]
        return torch.cat([self.program(c, method="features")[0][:r] for c, r in _chunks(protected.float(), n)])


class _Prepare:
    """``x -> (logits, feat_x)`` through the FMD program's ``prepare`` method."""

    def __init__(self, program: PteProgram):
        self.program = program

    def __call__(self, x: torch.Tensor):
        logits, feat = self.program(x, method="prepare")[:2]
        return logits, feat


class PteFMD(_ProgramShape, FMDProtector):
    """FMD on an ``fmd-step`` program (``eps``, ``alpha``, ``lam`` baked in; ``steps`` and
    ``seed`` are the host's)."""

    def __init__(self, artifact: str | os.PathLike, config: FMDConfig | None = None, verify: bool = True,
                 **overrides: Any):
        self.program = PteProgram(artifact, verify, expect_method="fmd-step")
        p = self.program.params
        baked = {k: p[k] for k in ("eps", "alpha", "lam") if k in p}
        if config is None:
            config = FMDConfig(**{**baked, "steps": p.get("steps", 100), **overrides})
        _check_baked(config, baked, self.program.path)
        Protector.__init__(self, config)
        self.in_channels = self._program_shape()[1]
        self.classifier = _Prepare(self.program)
        self.step = _PteStep(self.program, eps=config.eps / 255.0, alpha=config.alpha / 255.0, lam=config.lam)

    def _protect(self, images, rng):
        return self._run_chunked(super()._protect, images, rng)


PROTECTORS = {"generator": PteGenerator, "pmt-step": PtePMT, "fmd-step": PteFMD}


def load_protector(artifact: str | os.PathLike, verify: bool = True, **overrides: Any) -> Protector:
    """The .pte protector for an artifact, chosen by its manifest's ``method``."""
    _, manifest = read_artifact(artifact)
    method = manifest.get("method")
    if method not in PROTECTORS:
        raise InvalidInput(f"{artifact} holds a {method!r} program; protectors run "
                           f"{', '.join(PROTECTORS)} programs")
    return PROTECTORS[method](artifact, verify=verify, **overrides)


__all__: Sequence[str] = ("PteProgram", "PteGenerator", "PteShallow", "PtePMT", "PteFMD", "load_protector",
                          "read_artifact", "set_threads")
