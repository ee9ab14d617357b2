"""Run exported protection programs (.pte) with the ExecuTorch runtime, behind the same
protector API as eager PyTorch.

An artifact is a folder holding one ``<program>.pte`` and its manifest (format in
:mod:`photoveil.artifact`). :class:`PteProgram` checks the manifest's sha256 against the
.pte (``IntegrityError`` on mismatch) before anything is loaded, then runs its entry points.

The step protectors share the eager ones' host side (presets, validation, batching,
seeding, start image, random draws and loop: :class:`~photoveil.client.protect.pmt.PMTBase`,
:class:`~photoveil.client.protect.fmd.FMDBase`) and pass the program as their step:

* :class:`PteGenerator` — ``protect(images)`` runs the generator program;
* :class:`PtePMT` — the ``pmt-step`` program is called ``steps`` times; ``features()``
  runs the program's ``features`` entry point on the result;
* :class:`PteFMD` — ``prepare`` gives the clean logits / feature map, then the ``fmd-step``
  program runs ``steps`` times;
* :class:`PteShallow` — ``features(images)`` of a ``shallow`` program.

Programs have a fixed input shape (batch and size in the manifest); images of another size
are rejected with the size the program takes, and batches are run in program-sized chunks.
Settings baked into a step program (:attr:`ProgramKind.baked`: step size, augmentation
kind, smoothing kernel, eps, ...) come from the manifest; host-side ones (steps, seed,
init, noise std) can be overridden.

Example::

    >>> pmt = PtePMT("artifacts/pmt-step", seed=0)      # an artifact folder
    >>> protected = pmt.protect(faces)                   # [N,3,H,W] at the program's H, W
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from photoveil.artifact import KINDS, get_kind, open_artifact, verify_hash
from photoveil.client.protect.base import Protector
from photoveil.client.protect.fmd import FMDBase, FMDConfig
from photoveil.client.protect.generator import GeneratorConfig
from photoveil.client.protect.pmt import PMTBase, PMTConfig
from photoveil.errors import InvalidInput, NotFound
from photoveil.imageops import in_layout


def set_threads(n: int) -> int:
    """Size of the ExecuTorch (XNNPACK) thread pool; returns the previous size."""
    from executorch.extension.pybindings import portable_lib

    if not isinstance(n, int) or n < 1:
        raise InvalidInput(f"threads must be an int >= 1, got {n!r}")
    old = portable_lib._threadpool_get_thread_count()
    portable_lib._unsafe_reset_threadpool(n)
    return old


class PteProgram:
    """A verified, loaded ExecuTorch program.

    Args:
        artifact: artifact folder or its .pte.
        verify: check the manifest's sha256 against the .pte bytes first.
        expect_kind: raise ``InvalidInput`` unless the manifest's ``kind`` is this.

    ``program(*tensors, entry="forward")`` returns the outputs as a list of tensors.
    """

    def __init__(self, artifact: str | os.PathLike, verify: bool = True, expect_kind: str | None = None):
        from executorch.runtime import Runtime

        art = open_artifact(artifact)
        self.path, self.manifest = art.pte, art.manifest
        # keep the bytes alive: the runtime reads the program from this buffer
        self._data = self.path.read_bytes()
        if verify:
            verify_hash(self._data, self.manifest, self.path.name)
        kind = self.manifest.kind
        if expect_kind and kind != expect_kind:
            raise InvalidInput(f"{self.path} is a {kind!r} program; this needs a {expect_kind!r} program "
                               f"(`photoveil export {expect_kind} ...`)")
        self._program = Runtime.get().load_program(self._data)
        self._entries: dict[str, Any] = {}

    @property
    def entry_points(self) -> set[str]:
        return set(self._program.method_names)

    @property
    def input_shapes(self) -> list[list[int]]:
        return self.manifest.input_shapes

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest.params)

    def _entry(self, name: str):
        if name not in self._entries:
            if name not in self.entry_points:
                raise NotFound(f"{self.path.name} has no entry point {name!r}; it has "
                               f"{', '.join(sorted(self.entry_points))}")
            self._entries[name] = self._program.load_method(name)
        return self._entries[name]

    def __call__(self, *tensors: torch.Tensor, entry: str = "forward") -> list[torch.Tensor]:
        return list(self._entry(entry).execute(in_layout(tensors, self.manifest.layout)))


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


def _config(config_cls, program: PteProgram, config, overrides: dict[str, Any]):
    """The protector config of a step/generator program: the manifest's baked settings,
    its host defaults, then ``overrides``; InvalidInput if a baked setting is changed."""
    kind = get_kind(program.manifest.kind)
    baked = kind.baked_values(program.params)
    if config is None:
        wrong = {k: v for k, v in overrides.items() if k in baked and v != baked[k]}
        _check_baked(wrong, baked, program.path)
        config = config_cls(**{**baked, **kind.host_values(program.params), **overrides})
    _check_baked({k: getattr(config, k) for k in baked if getattr(config, k) != baked[k]}, baked, program.path)
    return config


def _check_baked(wrong: dict[str, Any], baked: dict[str, Any], path: Path) -> None:
    if wrong:
        detail = ", ".join(f"{k}={have!r} (program: {baked[k]!r})" for k, have in wrong.items())
        raise InvalidInput(f"{path.name} was exported with other settings: {detail}; these are fixed in the "
                           "program: re-export it, or leave them at the program's values")


class PteGenerator(_ProgramShape, Protector):
    """The generator protector on a ``generator`` program (``strength`` is baked in)."""

    method = "generator"
    Config = GeneratorConfig

    def __init__(self, artifact: str | os.PathLike, config: GeneratorConfig | None = None, verify: bool = True,
                 **overrides: Any):
        self.program = PteProgram(artifact, verify, expect_kind="generator")
        overrides.setdefault("checkpoint", str(self.program.path))
        super().__init__(_config(GeneratorConfig, self.program, config, overrides))
        self.manifest = self.program.manifest
        self.in_channels = self._program_shape()[1]

    def _protect(self, images, rng):
        return self._run_chunked(lambda x, _rng: self.program(x.float())[0], images, rng)


class PteShallow:
    """Upload features of a ``shallow`` program: ``features(images) -> E_c(images)``."""

    def __init__(self, artifact: str | os.PathLike, verify: bool = True):
        self.program = PteProgram(artifact, verify, expect_kind="shallow")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        shape = self.program.input_shapes[0]
        if images.dim() != 4 or list(images.shape[1:]) != shape[1:]:
            raise InvalidInput(f"{self.program.path.name} takes images [N,{','.join(map(str, shape[1:]))}], "
                               f"got {tuple(images.shape)}")
        return torch.cat([self.program(c)[0][:r] for c, r in _chunks(images.float(), shape[0])])


class ProgramStep:
    """A step program's ``forward`` as the step callable of the host loop (counts calls)."""

    def __init__(self, program: PteProgram):
        self.program = program
        self.calls = 0

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.program(*tensors)[0]


class ProgramOutputs(ProgramStep):
    """A step program's ``forward`` returning all its outputs (PMT: ``x_t, m, loss``)."""

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        return tuple(self.program(*tensors))


class PtePMT(_ProgramShape, PMTBase):
    """PMT on a ``pmt-step`` program: the eager protector's host loop, program steps.

    Args:
        artifact: the ``pmt-step`` artifact.
        config: a full :class:`PMTConfig` (must agree with the program's baked settings);
            default: the manifest's settings with ``overrides`` (``steps``, ``seed``,
            ``init``, ``init_sigma``, ``aug_sigma``, ``aug_affine``, ``progress``) applied.
    """

    def __init__(self, artifact: str | os.PathLike, config: PMTConfig | None = None, verify: bool = True,
                 **overrides: Any):
        self.program = PteProgram(artifact, verify, expect_kind="pmt-step")
        names = [i.get("name") for i in self.program.manifest.inputs]
        if "alpha" not in names:
            raise InvalidInput(f"{self.program.path} is a pmt-step program of an older photoveil (inputs "
                               f"{', '.join(map(str, names))}); re-export it with `photoveil export pmt-step`")
        super().__init__(_config(PMTConfig, self.program, config, overrides), ProgramOutputs(self.program))

    def reference(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.program(x, entry="reference")

    def _protect(self, images, rng):
        return self._run_chunked(super()._protect, images, rng)

    def features_of(self, protected: torch.Tensor, model: int = 0) -> torch.Tensor:
        if model != 0:
            raise InvalidInput("a pmt-step program carries the features of its first authorized model only (model=0)")
        n = self._program_shape()[0]
        return torch.cat([self.program(c, entry="features")[0][:r] for c, r in _chunks(protected.float(), n)])


class _Prepare:
    """``x -> (logits, feat_x, emb_x)`` through the FMD program's ``prepare`` entry point."""

    def __init__(self, program: PteProgram):
        self.program = program

    def __call__(self, x: torch.Tensor):
        logits, feat, emb = self.program(x, entry="prepare")[:3]
        return logits, feat, emb


class _FMDProgramStep(ProgramStep):
    """The ``fmd-step`` program's ``forward``: ``(x_star_next, m_next)``."""

    def __call__(self, *tensors: torch.Tensor):
        self.calls += 1
        out = self.program(*tensors)
        return out[0], out[1]


class PteFMD(_ProgramShape, FMDBase):
    """FMD on an ``fmd-step`` program (``eps``, ``lam``, ``lam_emb``, ``feature_loss``, ``mu``,
    ``diversity`` baked in; ``steps``, ``alpha``, ``alpha_schedule`` and ``seed`` are the host's)."""

    def __init__(self, artifact: str | os.PathLike, config: FMDConfig | None = None, verify: bool = True,
                 **overrides: Any):
        self.program = PteProgram(artifact, verify, expect_kind="fmd-step")
        cfg = _config(FMDConfig, self.program, config, overrides)
        in_channels = self.program.input_shapes[0][1]
        super().__init__(cfg, _FMDProgramStep(self.program), _Prepare(self.program), in_channels)

    def _protect(self, images, rng):
        return self._run_chunked(super()._protect, images, rng)


PROTECTORS = {"generator": PteGenerator, "pmt-step": PtePMT, "fmd-step": PteFMD}
assert set(PROTECTORS) == {k for k, kind in KINDS.items() if kind.protection}


def load_protector(artifact: str | os.PathLike, verify: bool = True, **overrides: Any) -> Protector:
    """The .pte protector for an artifact, chosen by its manifest's ``kind``."""
    kind = open_artifact(artifact).manifest.kind
    if kind not in PROTECTORS:
        raise InvalidInput(f"{artifact} holds a {kind!r} program; protectors run "
                           f"{', '.join(PROTECTORS)} programs")
    return PROTECTORS[kind](artifact, verify=verify, **overrides)


__all__: Sequence[str] = ("PteProgram", "PteGenerator", "PteShallow", "PtePMT", "PteFMD", "ProgramStep",
                          "load_protector", "set_threads")
