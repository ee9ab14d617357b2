"""Versions of published artifacts on the server: what is served, and which uploads are still accepted.

:class:`VersionedArtifactStore` serves the provider's folder as :mod:`photoveil.catalog`
lays it out: every version the catalog lists as active (the current one marked), none of
the retired ones, plus the unversioned folders of the older layout. It re-reads
``catalog.json`` when the file's stat changes, so replicas reading the same folder agree
(and answer with the same ``generation``). When the folder holds the provider's key set
(``_keyset/``), a version whose signature does not verify with an active key of its
latest statement is not served: a revoked key's artifacts leave every replica at once.

:func:`check_upload` is the compatibility rule for uploads naming the artifact (id +
version) that made them: a version still served is accepted; a retired or unknown one,
or one made for another model version than the one hosted, is refused with
FAILED_PRECONDITION (:class:`ArtifactOutdated`) naming the current version, also as the
trailing metadata ``photoveil-current-version`` so a phone can update without parsing
the message. An upload naming no artifact is accepted as before versions existed.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from photoveil.catalog import (ARTIFACT_ID_KEY, CATALOG_FILE, CURRENT_VERSION_KEY, KEYSET_DIR, Catalog, Entry,
                               VersionEntry, check_name, read_catalog, version_folder)
from photoveil.errors import IntegrityError, NotFound, PhotoveilError
from photoveil.keyset import KeyHistory, KeySet, verify_artifact_with
from photoveil.server.artifacts import ArtifactStore, PublishedArtifact

log = logging.getLogger("photoveil.server")


class ArtifactOutdated(IntegrityError):
    """An upload made by an artifact version this server no longer accepts (-> FAILED_PRECONDITION)."""

    def __init__(self, message: str, artifact_id: str, current: str):
        super().__init__(message)
        self.artifact_id, self.current = artifact_id, current

    def trailers(self) -> tuple[tuple[str, str], ...]:
        return ((ARTIFACT_ID_KEY, self.artifact_id), (CURRENT_VERSION_KEY, self.current))


@dataclass(frozen=True)
class VersionedArtifact(PublishedArtifact):
    current: bool = True


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class VersionedArtifactStore(ArtifactStore):
    """:class:`ArtifactStore` over a catalog of versions; thread-safe."""

    def __init__(self, root: str | Path, max_message_bytes: int | None = None, public_key: str | Path = ""):
        super().__init__(root, max_message_bytes, public_key)
        self._state_lock = threading.Lock()
        self._catalog_stamp: object = object()
        self._catalog = Catalog()
        self._keys_stamp: object = object()
        self._keys: KeySet | None = None
        self._verified: dict[Path, tuple[tuple, bool]] = {}

    # -- the shared state, re-read when it changes -----------------------------------

    def catalog(self) -> Catalog:
        stamp = _stamp(self.root / CATALOG_FILE)
        with self._state_lock:
            if stamp != self._catalog_stamp:
                try:
                    self._catalog = read_catalog(self.root)
                except IntegrityError as exc:  # keep serving the last good catalog
                    log.error("cannot read %s: %s", self.root / CATALOG_FILE, exc)
                else:
                    self._catalog_stamp = stamp
            return self._catalog

    @property
    def generation(self) -> int:
        return self.catalog().generation

    @property
    def history(self) -> KeyHistory:
        return KeyHistory(self.root / KEYSET_DIR)

    def keys(self) -> KeySet | None:
        """The latest key statement of the folder, None when it has none."""
        history = self.history
        stamp = tuple(history.sequences())
        with self._state_lock:
            if stamp != self._keys_stamp:
                self._keys, self._keys_stamp = history.latest(), stamp
            return self._keys

    def _signed_by_active_key(self, folder: Path, keys: KeySet) -> bool:
        stamp = (keys.sequence, *(_stamp(p) for p in sorted(folder.iterdir())))
        with self._state_lock:
            hit = self._verified.get(folder)
        if hit and hit[0] == stamp:
            return hit[1]
        try:
            verify_artifact_with(folder, keys)
            ok = True
        except PhotoveilError as exc:
            log.warning("not serving %s: %s", folder, exc)
            ok = False
        with self._state_lock:
            self._verified[folder] = (stamp, ok)
        return ok

    # -- listing and lookup ----------------------------------------------------------

    def _version(self, entry: Entry, record: VersionEntry) -> VersionedArtifact:
        folder = version_folder(self.root, entry.artifact_id, record.version)
        published = self._load(folder)
        if published.manifest.version != record.version:
            raise IntegrityError(f"{folder}: its manifest says version {published.manifest.version!r}")
        keys = self.keys()
        if keys is not None and not self._signed_by_active_key(folder, keys):
            raise IntegrityError(f"{entry.artifact_id} {record.version} is not signed by an active key of key set "
                                 f"{keys.sequence}")
        fields = {f.name: getattr(published, f.name) for f in dataclasses.fields(PublishedArtifact)}
        return VersionedArtifact(**{**fields, "artifact_id": entry.artifact_id},
                                 current=record.version == entry.current)

    def list(self, model_id: str = "") -> list[PublishedArtifact]:
        catalog = self.catalog()
        out = [a for a in super().list(model_id) if a.artifact_id not in catalog.artifacts]
        for entry in catalog.artifacts.values():
            for record in entry.served():
                try:
                    artifact = self._version(entry, record)
                except PhotoveilError as exc:  # one broken version does not hide the others
                    log.warning("not listing %s %s: %s", entry.artifact_id, record.version, exc)
                    continue
                if not model_id or str(artifact.manifest.model_id) == model_id:
                    out.append(artifact)
        return sorted(out, key=lambda a: a.artifact_id)

    def get(self, artifact_id: str, version: str = "") -> PublishedArtifact:
        """``version`` of an artifact, "" for its current one; NOT_FOUND for a retired or unknown version."""
        entry = self.catalog().artifacts.get(artifact_id)
        if entry is None:
            artifact = super().get(artifact_id)
            if version and version != artifact.manifest.version:
                raise NotFound(f"artifact {artifact_id!r} has only version {artifact.manifest.version!r}")
            return artifact
        record = entry.get(version or entry.current)
        if record is None or record.status != "active":
            raise NotFound(f"artifact {artifact_id!r} version {version or '(current)'!r} is not served "
                           f"({'retired' if record else 'unknown'}); the current version is "
                           f"{entry.current or 'none (all retired)'}")
        return self._version(entry, record)

    # -- uploads ---------------------------------------------------------------------

    def check_upload(self, artifact_id: str, version: str, model_version: str) -> None:
        """Raise :class:`ArtifactOutdated` unless uploads of ``artifact_id`` ``version`` are accepted
        (InvalidInput for a malformed id or version: they go into messages and metadata)."""
        check_name(artifact_id, "artifact.artifact_id")
        if version:
            check_name(version, "artifact.version")
        entry = self.catalog().artifacts.get(artifact_id)
        if entry is None:
            try:
                legacy = super().get(artifact_id)
            except PhotoveilError:
                raise ArtifactOutdated(f"the upload names artifact {artifact_id!r}, which this server does not "
                                       "publish; install one it lists (ListArtifacts)", artifact_id, "") from None
            current = legacy.manifest.version
            if not version or version == current:
                return
            entry = Entry(artifact_id, current, [VersionEntry(current)])
        record = entry.get(version)
        if record is None or record.status != "active":
            state = "retired" if record else "unknown"
            raise ArtifactOutdated(f"artifact {artifact_id!r} version {version!r} is {state}; the current version "
                                   f"is {entry.current or 'none'}: update the artifact and upload again",
                                   artifact_id, entry.current)
        wanted = record.compatible_model_version
        if wanted and wanted != model_version:
            raise ArtifactOutdated(f"artifact {artifact_id!r} version {version!r} was made for model version "
                                   f"{wanted!r}, this server runs {model_version!r}; the current version is "
                                   f"{entry.current or 'none'}: update the artifact and upload again",
                                   artifact_id, entry.current)


def check_upload(store: ArtifactStore | None, model_version_of, request, context=None) -> None:
    """The rule for a request with an ``artifact`` field; ``model_version_of(model_id)`` the hosted
    model's version. Without a store (no artifacts_dir) nothing can be checked: accepted."""
    if not request.HasField("artifact") or not request.artifact.artifact_id:
        return
    if not isinstance(store, VersionedArtifactStore):
        return
    try:
        store.check_upload(request.artifact.artifact_id, request.artifact.version,
                           model_version_of(request.model_id))
    except ArtifactOutdated as exc:
        if context is not None:
            context.set_trailing_metadata(exc.trailers())
        raise


def key_statements(store: ArtifactStore | None, since: int) -> list[tuple[int, bytes, bytes]]:
    """The provider's key statements after ``since`` (none without a store or key set)."""
    return store.history.statements(since) if isinstance(store, VersionedArtifactStore) else []
