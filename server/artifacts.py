"""Published protection artifacts: one folder per artifact under the artifacts directory.

Each ``<artifacts_dir>/<artifact_id>/`` is an artifact folder as :mod:`photoveil.artifact`
defines it (one .pte, its manifest, the signature bundle: any ``*.sig`` /
``*.sigstore.json``). The server only serves what is there; clients verify signature and
hashes themselves.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from photoveil.artifact import Manifest, open_artifact, sha256_file
from photoveil.errors import IntegrityError, InvalidInput, NotFound

ARTIFACT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SIGNATURE_SUFFIXES = (".sig", ".sigstore.json", ".sigstore")
DEFAULT_CHUNK = 256 << 10
MAX_CHUNK = 2 << 20

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

    @property
    def signed(self) -> bool:
        return any(f.role == SIGNATURE for f in self.files)


class ArtifactStore:
    """Reads artifact folders; file hashes are cached by (size, mtime)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotFound(f"artifacts directory {self.root} does not exist")
        self._hashes: dict[Path, tuple[tuple[int, int], str]] = {}
        self._lock = threading.Lock()

    def _hash(self, path: Path) -> tuple[int, str]:
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
        art = open_artifact(folder, strict=True)
        signatures = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(SIGNATURE_SUFFIXES))
        files = []
        for path, role in [(art.pte, PROGRAM), (art.manifest_path, MANIFEST_ROLE),
                           *((s, SIGNATURE) for s in signatures)]:
            size, digest = self._hash(path)
            files.append(ArtifactFile(path.name, role, size, digest, path))
        return PublishedArtifact(folder.name, art.manifest, art.manifest_text, tuple(files))

    def list(self, model_id: str = "") -> list[PublishedArtifact]:
        out = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and ARTIFACT_ID.match(p.name)):
            try:
                artifact = self._load(folder)
            except IntegrityError:
                continue  # a half-written or broken folder is not published
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

    @staticmethod
    def chunks(artifact: PublishedArtifact, chunk_size: int = 0) -> Iterator[tuple[ArtifactFile, int, bytes, bool]]:
        """(file, offset, data, last) for every file in order; an empty file yields one empty chunk."""
        chunk_size = chunk_size or DEFAULT_CHUNK
        if not 1024 <= chunk_size <= MAX_CHUNK:
            raise InvalidInput(f"chunk_size {chunk_size} must be 0 (default {DEFAULT_CHUNK}) or 1024..{MAX_CHUNK}")
        for f in artifact.files:
            with f.path.open("rb") as fh:
                offset, data = 0, fh.read(chunk_size)
                while True:
                    following = fh.read(chunk_size)
                    yield f, offset, data, not following
                    if not following:
                        break
                    offset, data = offset + len(data), following
