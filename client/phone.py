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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from photoveil import wire
from photoveil.artifact import KINDS, Manifest
from photoveil.client.transport import RecognitionClient, check_file_name
from photoveil.errors import IntegrityError, InvalidInput

UPLOAD_MODES = ("image", "features")


@dataclass
class Installed:
    """A verified artifact loaded on the runtime."""

    artifact_id: str
    folder: Path
    manifest: Manifest
    runner: Any                     # a PTE protector (protect) or PteShallow (features)
    load_ms: float = 0.0
    signer: str = ""                # id of the key that signed it (photoveil.keyset)
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def ref(self) -> tuple[str, str]:
        """``(artifact_id, version)``: what uploads made with it name."""
        return self.artifact_id, self.manifest.version

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
        public_key: the provider's key set shipped inside the app (a ``keys.json`` or its folder,
            see :mod:`photoveil.keyset`), or one public key (PEM). The phone pins the newest key
            set it learned since (``workdir/keyset/``, :meth:`refresh_keys`).
        workdir: where downloaded artifacts are kept.
        threads: ExecuTorch thread-pool size (``None``: leave as is).
    """

    def __init__(self, rpc: RecognitionClient, public_key: str | os.PathLike, workdir: str | os.PathLike,
                 threads: int | None = None):
        from photoveil.keyset import pinned

        self.rpc, self.public_key, self.workdir = rpc, public_key, Path(workdir)
        self.keys = pinned(public_key, self.workdir / "keyset")
        if threads is not None:
            from photoveil.client.runtime import set_threads

            set_threads(threads)

    def install(self, artifact_id: str, version: str = "", **overrides: Any) -> Installed:
        """Download, verify (signature + hashes) and load an artifact (``version``: "" for the
        current one); nothing is loaded unless it verifies with the pinned key set.
        ``overrides`` go to the protector (``seed``, ``steps`` ...)."""
        for info in self.rpc.list_artifacts():
            if info.artifact_id == artifact_id:
                for f in info.files:
                    check_file_name(f.name, artifact_id)
        try:
            folder, manifest = self.rpc.fetch_verified(artifact_id, self.workdir, self.keys, version=version)
        except OSError as exc:  # a name that slipped past the listing (GetArtifact told another story)
            raise IntegrityError(f"artifact {artifact_id!r} could not be stored as sent ({type(exc).__name__}: "
                                 f"{exc}); nothing was installed") from None
        return self._load(artifact_id, folder, manifest, overrides)

    def _load(self, artifact_id: str, folder: Path, manifest: Manifest, overrides: dict[str, Any]) -> Installed:
        from photoveil.artifact import SIGNATURE_FILE
        from photoveil.client.runtime import PteShallow, load_protector
        from photoveil.keyset import bundle_key_hint

        t0 = time.perf_counter()
        if manifest.kind == "shallow":
            runner = PteShallow(folder)
        elif manifest.kind in KINDS:
            runner = load_protector(folder, **overrides)
        else:
            raise InvalidInput(f"artifact {artifact_id!r} holds a {manifest.kind!r} program; the phone runs "
                               f"{', '.join(KINDS)} programs")
        # it verified with the key its bundle names, so that key is the signer
        return Installed(artifact_id, folder, manifest, runner, (time.perf_counter() - t0) * 1e3,
                         bundle_key_hint(folder / SIGNATURE_FILE), dict(overrides))

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

    def upload_image(self, model_id: str, protected: torch.Tensor, top_k: int = 5,
                     artifact: Installed | None = None) -> Answer:
        """Identify a protected face sent as a PNG (lossless: the perturbation survives);
        ``artifact``: the installed artifact that protected it (the upload names its version)."""
        if protected.dim() == 4:
            if protected.shape[0] != 1:
                raise InvalidInput("upload_image sends one face at a time")
            protected = protected[0]
        data = wire.encode_image(protected, "PNG")
        t0 = time.perf_counter()
        reply = self.rpc.identify(model_id, data, top_k=top_k, artifact=artifact.ref if artifact else None)
        return self._answer("image", reply, len(data), t0)

    def upload_features(self, model_id: str, split: str, features: torch.Tensor, top_k: int = 5,
                        artifact: Installed | None = None) -> Answer:
        """Identify from shallow features; the server runs the rest of its split model."""
        features = features.float().contiguous()
        t0 = time.perf_counter()
        reply = self.rpc.identify(model_id, features, top_k=top_k, split_point=split,
                                  artifact=artifact.ref if artifact else None)
        return self._answer("features", reply, features.numel() * 4, t0)

    # -- the artifact's life: key rotation, revocation, version updates ----------------

    def refresh_keys(self):
        """Learn the provider's key statements since the pinned set (each must be signed by a key
        of the one before); the new pinned :class:`~photoveil.keyset.KeySet`. A statement that
        does not verify raises IntegrityError and leaves the pinned set as it was."""
        from photoveil.keyset import advance, save_pinned

        newer = advance(self.keys, self.rpc.key_statements(self.keys.sequence))
        if newer.sequence != self.keys.sequence:
            save_pinned(newer, self.workdir / "keyset")
            self.keys = newer
        return self.keys

    def open_cached(self, artifact_id: str, **overrides: Any) -> Installed:
        """Load an artifact downloaded before, verified again with the pinned key set: one signed
        by a key revoked since is refused (IntegrityError) although its files are unchanged."""
        from photoveil.keyset import verify_artifact_with

        folder = self.workdir / artifact_id
        manifest, _ = verify_artifact_with(folder, self.keys)
        return self._load(artifact_id, folder, manifest, overrides)

    def check_trusted(self, installed: Installed) -> None:
        """IntegrityError if the key that signed a loaded artifact is no longer active in the pinned set."""
        from photoveil.errors import IntegrityError

        key = self.keys.get(installed.signer)
        if key is None or key.status != "active":
            raise IntegrityError(f"artifact {installed.artifact_id!r} {installed.version} was signed by key "
                                 f"{installed.signer[:12]}, {'revoked' if key else 'not'} in the pinned key set "
                                 f"{self.keys.sequence}; install it again")

    def protect_and_upload(self, installed: Installed, face: torch.Tensor, model_id: str, mode: str = "image",
                           top_k: int = 5) -> tuple[Answer, Installed]:
        """Protect ``face`` with ``installed`` and upload it (``mode`` image | features) naming the
        artifact's version. When the server answers that this version is no longer accepted
        (FAILED_PRECONDITION with the current version), update — learn new keys, pull, verify,
        install the current version — and try once more. ``(answer, the artifact used)``."""
        import grpc

        from photoveil.catalog import CURRENT_VERSION_KEY
        from photoveil.client.transport import RpcFailed

        if mode not in UPLOAD_MODES:
            raise InvalidInput(f"mode {mode!r}; accepted: {', '.join(UPLOAD_MODES)}")
        try:
            return self._protect_upload(installed, face, model_id, mode, top_k), installed
        except RpcFailed as exc:
            current = exc.trailers.get(CURRENT_VERSION_KEY, "")
            if exc.code != grpc.StatusCode.FAILED_PRECONDITION or current in ("", installed.version):
                raise
        self.refresh_keys()  # the new version may be signed by a key introduced since
        installed = self.install(installed.artifact_id, version=current, **installed.overrides)
        return self._protect_upload(installed, face, model_id, mode, top_k), installed

    def _protect_upload(self, installed: Installed, face: torch.Tensor, model_id: str, mode: str,
                        top_k: int) -> Answer:
        self.check_trusted(installed)
        protected, _ = self.protect(installed, face)
        if mode == "image":
            return self.upload_image(model_id, protected, top_k, artifact=installed)
        return self.upload_features(model_id, installed.split, self.features(installed, protected), top_k,
                                    artifact=installed)
