"""The phone-side path: pull + verify the provider's artifact, protect on the ExecuTorch
runtime, upload the protected image or its shallow features, get the answer.

This is what an Android app does with ExecuTorch's ``Module`` (docs/android.md); here the
same steps run with the Python runtime so they can be tested and measured.

Example::

    >>> with RecognitionClient(target, token=token) as rpc:
    ...     phone = Phone(rpc, public_key="provider.pub", workdir="phone/")
    ...     pmt = phone.install("pmt-step")                  # refuses a tampered / unsigned artifact
    ...     protected, ms = phone.protect(pmt, face)         # [1,3,H,W] aligned face in [0, 1]
    ...     answer = phone.upload_image(protected)           # Identify on the server
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from photoveil import wire
from photoveil.artifact import KINDS, Manifest
from photoveil.client.transport import RecognitionClient
from photoveil.errors import IntegrityError, InvalidInput

UPLOAD_MODES = ("image", "features")


def check_file_name(name: str, artifact_id: str) -> str:
    """A file name a server sends must be one plain name inside the artifact folder."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
            or os.path.isabs(name) or len(name) > 255):
        raise IntegrityError(f"artifact {artifact_id!r}: the server named a file {name[:80]!r}; an artifact file "
                             "is one plain name (no '', '.', '..', separators or absolute paths); nothing was "
                             "installed")
    return name


@dataclass
class Installed:
    """A verified artifact loaded on the runtime."""

    artifact_id: str
    folder: Path
    manifest: Manifest
    runner: Any                     # a PTE protector (protect) or PteShallow (features)
    load_ms: float = 0.0

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def split(self) -> str:
        return self.manifest.split or ""


@dataclass
class Answer:
    """What the server said about one upload."""

    mode: str
    labels: list[str]
    scores: list[float]
    bytes_sent: int
    rpc_ms: float
    model_version: str = ""

    @property
    def top1(self) -> str:
        return self.labels[0] if self.labels else ""


class Phone:
    """Installs signed artifacts from a server and uploads protected faces to it.

    Args:
        rpc: a connected :class:`RecognitionClient`.
        public_key: the provider's public key (PEM) shipped inside the app.
        workdir: where downloaded artifacts are kept.
        threads: ExecuTorch thread-pool size (``None``: leave as is).
    """

    def __init__(self, rpc: RecognitionClient, public_key: str | os.PathLike, workdir: str | os.PathLike,
                 threads: int | None = None):
        self.rpc, self.public_key, self.workdir = rpc, Path(public_key), Path(workdir)
        if threads is not None:
            from photoveil.client.runtime import set_threads

            set_threads(threads)

    def install(self, artifact_id: str, **overrides: Any) -> Installed:
        """Download, verify (signature + hashes) and load an artifact; nothing is loaded
        unless it verifies. ``overrides`` go to the protector (``seed``, ``steps`` ...)."""
        from photoveil.client.runtime import PteShallow, load_protector

        for info in self.rpc.list_artifacts():
            if info.artifact_id == artifact_id:
                for f in info.files:
                    check_file_name(f.name, artifact_id)
        try:
            folder, manifest = self.rpc.fetch_verified(artifact_id, self.workdir, self.public_key)
        except OSError as exc:  # a name that slipped past the listing (GetArtifact told another story)
            raise IntegrityError(f"artifact {artifact_id!r} could not be stored as sent ({type(exc).__name__}: "
                                 f"{exc}); nothing was installed") from None
        t0 = time.perf_counter()
        if manifest.kind == "shallow":
            runner = PteShallow(folder)
        elif manifest.kind in KINDS:
            runner = load_protector(folder, **overrides)
        else:
            raise InvalidInput(f"artifact {artifact_id!r} holds a {manifest.kind!r} program; the phone runs "
                               f"{', '.join(KINDS)} programs")
        return Installed(artifact_id, folder, manifest, runner, (time.perf_counter() - t0) * 1e3)

    @staticmethod
    def protect(installed: Installed, face: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``(protected [N,3,H,W], milliseconds on the runtime)``."""
        if not hasattr(installed.runner, "protect"):
            raise InvalidInput(f"{installed.artifact_id!r} is a {installed.kind} program, not a protector")
        t0 = time.perf_counter()
        protected = installed.runner.protect(face)
        return protected, (time.perf_counter() - t0) * 1e3

    @staticmethod
    def features(installed: Installed, protected: torch.Tensor) -> torch.Tensor:
        """Shallow features of a protected face: a PMT step program's own ``features``
        method, or a ``shallow`` program."""
        runner = installed.runner
        if hasattr(runner, "features_of"):
            return runner.features_of(protected)
        if hasattr(runner, "features"):
            return runner.features(protected)
        raise InvalidInput(f"{installed.artifact_id!r} ({installed.kind}) cannot compute shallow features; "
                           "install the provider's shallow artifact for the upload-features mode")

    def _answer(self, mode: str, reply, sent: int, t0: float) -> Answer:
        cands = reply.results[0].candidates if reply.results else []
        return Answer(mode, [c.label for c in cands], [c.score for c in cands], sent,
                      (time.perf_counter() - t0) * 1e3, reply.model_version)

    def upload_image(self, model_id: str, protected: torch.Tensor, top_k: int = 5) -> Answer:
        """Identify a protected face sent as a PNG (lossless: the perturbation survives)."""
        if protected.dim() == 4:
            if protected.shape[0] != 1:
                raise InvalidInput("upload_image sends one face at a time")
            protected = protected[0]
        data = wire.encode_image(protected, "PNG")
        t0 = time.perf_counter()
        reply = self.rpc.identify(model_id, data, top_k=top_k)
        return self._answer("image", reply, len(data), t0)

    def upload_features(self, model_id: str, split: str, features: torch.Tensor, top_k: int = 5) -> Answer:
        """Identify from shallow features; the server runs the rest of its split model."""
        features = features.float().contiguous()
        t0 = time.perf_counter()
        reply = self.rpc.identify(model_id, features, top_k=top_k, split_point=split)
        return self._answer("features", reply, features.numel() * 4, t0)
