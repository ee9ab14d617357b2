"""Published protection artifacts: one folder per artifact under the artifacts directory.

Each ``<artifacts_dir>/<artifact_id>/`` is an artifact folder as :mod:`photoveil.artifact`
defines it (one .pte, its manifest, the signature bundle: any ``*.sig`` /
``*.sigstore.json``). The server only serves what is there; clients verify signature and
hashes themselves. A broken folder (a ``.pte`` that is a dangling link or a directory, a
manifest that does not parse, ...) is logged and left out of the listing, and asking for
it is FAILED_PRECONDITION; the other artifacts keep serving. ``signed`` is true only when
the folder's signature verifies against the configured public key.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from photoveil.artifact import Manifest, open_artifact, sha256_file
from photoveil.errors import IntegrityError, InvalidInput, NotFound

log = logging.getLogger("photoveil.server")
ARTIFACT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SIGNATURE_SUFFIXES = (".sig", ".sigstore.json", ".sigstore")
DEFAULT_CHUNK = 256 << 10
MAX_CHUNK = 2 << 20
CHUNK_HEADROOM = 1024  # bytes of an ArtifactChunk message besides its data (name, role, offset)

PROGRAM, MANIFEST_ROLE, SIGNATURE = "program", "manifest", "signature"


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    role: str
    size: int
    sha256: str
    path: Path


@dataclass(frozen=True)
class PublishedArtifact:
    artifact_id: str
    manifest: Manifest
    manifest_json: str
    files: tuple[ArtifactFile, ...]
    signed: bool = False    # the signature verifies against the server's public key


class ArtifactStore:
    """Reads artifact folders; file hashes and signature checks are cached by (size, mtime).

    ``max_message_bytes``: the server's gRPC message limit, which caps the chunk size.
    ``public_key``: the provider's public key; without it no artifact is reported signed.
    """

    def __init__(self, root: str | Path, max_message_bytes: int | None = None, public_key: str | Path = ""):
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotFound(f"artifacts directory {self.root} does not exist")
        if public_key and not Path(public_key).is_file():
            raise NotFound(f"artifacts public key {public_key} does not exist")
        self.public_key = Path(public_key) if public_key else None
        cap = MAX_CHUNK if max_message_bytes is None else max_message_bytes - CHUNK_HEADROOM
        self.max_chunk = max(1, min(MAX_CHUNK, cap))
        self._hashes: dict[Path, tuple[tuple[int, int], str]] = {}
        self._verified: dict[Path, tuple[tuple, bool]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _hash(self, path: Path) -> tuple[int, str]:
        if not path.is_file():  # a dangling link, a directory, a device: not servable
            raise IntegrityError(f"artifact {path.parent.name!r}: {path.name} is not a regular file")
        st = path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._hashes.get(path)
        if hit and hit[0] == stamp:
            return st.st_size, hit[1]
        digest = sha256_file(path)
        with self._lock:
            self._hashes[path] = (stamp, digest)
        return st.st_size, digest

    def _load(self, folder: Path) -> PublishedArtifact:
        try:
            art = open_artifact(folder, strict=True)
            signatures = sorted(p for p in folder.iterdir() if p.name.endswith(SIGNATURE_SUFFIXES))
            files = []
            for path, role in [(art.pte, PROGRAM), (art.manifest_path, MANIFEST_ROLE),
                               *((s, SIGNATURE) for s in signatures)]:
                size, digest = self._hash(path)
                files.append(ArtifactFile(path.name, role, size, digest, path))
        except NotFound as exc:
            raise IntegrityError(str(exc)) from None
        except OSError as exc:
            raise IntegrityError(f"artifact {folder.name!r} cannot be read ({type(exc).__name__}: {exc})") from None
        return PublishedArtifact(folder.name, art.manifest, art.manifest_text, tuple(files),
                                 self._signed(folder, files))

    def _signed(self, folder: Path, files: list[ArtifactFile]) -> bool:
        """Whether the folder verifies against the public key; cached while its files stay as they are."""
        if self.public_key is None or not any(f.role == SIGNATURE for f in files):
            return False
        stamp = tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in folder.iterdir() for st in [p.lstat()]))
        with self._lock:
            hit = self._verified.get(folder)
        if hit and hit[0] == stamp:
            return hit[1]
        from photoveil.signing import verify_artifact

        try:
            verify_artifact(folder, self.public_key)
            ok = True
        except (IntegrityError, NotFound) as exc:
            self._warn(folder, f"published unsigned: {exc}")
            ok = False
        with self._lock:
            self._verified[folder] = (stamp, ok)
        return ok

    def _warn(self, folder: Path, reason: str) -> None:
        with self._lock:
            if (folder.name, reason) in self._warned:
                return
            self._warned.add((folder.name, reason))
        log.warning("artifact folder %s: %s", folder, reason)

    def list(self, model_id: str = "") -> list[PublishedArtifact]:
        out = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and ARTIFACT_ID.match(p.name)):
            try:
                artifact = self._load(folder)
            except IntegrityError as exc:  # a half-written or broken folder is not published
                self._warn(folder, f"skipped: {exc}")
                continue
            if not model_id or str(artifact.manifest.model_id) == model_id:
                out.append(artifact)
        return out

    def get(self, artifact_id: str) -> PublishedArtifact:
        if not ARTIFACT_ID.match(artifact_id or ""):
            raise InvalidInput(f"artifact id {artifact_id[:80]!r} must match {ARTIFACT_ID.pattern}")
        folder = self.root / artifact_id
        if not folder.is_dir():
            known = ", ".join(a.artifact_id for a in self.list()) or "none"
            raise NotFound(f"unknown artifact {artifact_id!r}; published: {known}")
        return self._load(folder)

    def chunks(self, artifact: PublishedArtifact, chunk_size: int = 0
               ) -> Iterator[tuple[ArtifactFile, int, bytes, bool]]:
        """(file, offset, data, last) for every file in order; an empty file yields one empty chunk.

        ``chunk_size`` 0 means the default; any size is capped so a chunk message fits the
        server's message limit.
        """
        if chunk_size and not 1024 <= chunk_size <= MAX_CHUNK:
            raise InvalidInput(f"chunk_size {chunk_size} must be 0 (default {DEFAULT_CHUNK}) or 1024..{MAX_CHUNK}")
        chunk_size = min(chunk_size or DEFAULT_CHUNK, self.max_chunk)
        for f in artifact.files:
            try:
                fh = f.path.open("rb")
            except OSError as exc:  # removed or replaced since it was listed
                raise IntegrityError(f"artifact {artifact.artifact_id!r}: {f.name} cannot be read ({exc})") from None
            with fh:
                offset, data = 0, fh.read(chunk_size)
                while True:
                    following = fh.read(chunk_size)
                    yield f, offset, data, not following
                    if not following:
                        break
                    offset, data = offset + len(data), following
