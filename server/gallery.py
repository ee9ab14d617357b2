"""The gallery of enrolled embeddings: the store interface, its shared semantics, the SQLite store.

One row per enrolled embedding (identity, model id, model version, vector, generation,
created time). Every store promises the same: an ``add``/``add_many``/``delete`` is one
transaction, committed durably before it returns (an acknowledged enrolment survives a
crash of the server process), and each write bumps the model's **generation** in that
transaction. Writers of one model serialise on that counter, so rows and deletions carry
generations in commit order, and a reader that has seen generation G can fetch exactly
what changed after it (:meth:`GalleryStore.changes`). ``view`` keeps one
:class:`~photoveil.server.vector_index.GalleryIndex` per (model, dimension) updated from
that feed: every process sharing a store sees the others' writes (at the next ``view``,
or within ``gallery_index.refresh_ms``).

``SQLiteGallery`` (the default: a file, no set-up) uses WAL and ``synchronous=FULL``;
``photoveil.server.gallery_pg.PostgresGallery`` is the store replicas share;
``photoveil.server.gallery_backends.open_gallery`` picks one from the server config.
"""
from __future__ import annotations

import abc
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from photoveil.errors import DownloadError, InvalidInput
from photoveil.server.config import GalleryIndexConfig
from photoveil.server.vector_index import (Changes, GalleryIndex, GalleryView, check_index_config,  # noqa: F401
                                           match)

MAX_IDENTITY_CHARS = 128


class GalleryUnavailable(DownloadError):
    """The gallery database cannot be reached (-> UNAVAILABLE: the client may retry)."""


def check_identity(identity: str) -> str:
    if not identity or len(identity) > MAX_IDENTITY_CHARS or not identity.isprintable():
        raise InvalidInput(f"identity {identity[:40]!r} must be 1..{MAX_IDENTITY_CHARS} printable characters")
    return identity


def check_vectors(vectors: np.ndarray) -> np.ndarray:
    """Embeddings to store: a finite ``[n, d]`` float array -> little-endian float32."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise InvalidInput(f"embeddings must be [n, d] with n, d >= 1, got {list(vectors.shape)}")
    if not np.isfinite(vectors).all():
        raise InvalidInput("embeddings hold NaN/Inf; nothing was enrolled")
    return vectors


def changes_from_rows(generation: int, rows: list, deleted: list, dim: int) -> Changes:
    """Rows ``(id, identity, vector bytes)`` ordered by id and deleted record ids -> :class:`Changes`."""
    vectors = (np.frombuffer(b"".join(bytes(r[2]) for r in rows), dtype="<f4").reshape(len(rows), dim)
               .astype(np.float32)) if rows else np.zeros((0, dim), np.float32)
    return Changes(generation, np.array([r[0] for r in rows], np.int64), [r[1] for r in rows], vectors,
                   np.array([d[0] for d in deleted], np.int64))


class GalleryStore(abc.ABC):
    """What the server needs from a gallery; implementations must be thread-safe.

    A store implements ``add``, ``count``, ``delete``, ``close`` and either ``changes``
    (and gets ``view`` with its incremental index from here) or ``view`` itself."""

    def __init__(self, index: GalleryIndexConfig | None = None):
        self.index_config = index or GalleryIndexConfig()
        check_index_config(self.index_config)
        self._indexes: dict[tuple[str, int], tuple[threading.Lock, GalleryIndex]] = {}
        self._indexes_lock = threading.Lock()

    @abc.abstractmethod
    def add(self, model_id: str, model_version: str, identity: str, vectors: np.ndarray) -> list[int]:
        """Store each row of ``vectors`` [n, d]; return the record ids once committed."""

    def add_many(self, model_id: str, model_version: str, identities: list[str], vectors: np.ndarray) -> list[int]:
        """Row i of ``vectors`` under ``identities[i]``; one transaction where the store can (bulk loads)."""
        vectors = check_vectors(vectors)
        if len(identities) != len(vectors):
            raise InvalidInput(f"{len(identities)} identities for {len(vectors)} embeddings")
        ids: list[int] = []
        for i in range(len(identities)):
            ids += self.add(model_id, model_version, identities[i], vectors[i:i + 1])
        return ids

    def changes(self, model_id: str, dim: int, since: int) -> Changes | None:
        """Rows of ``model_id`` (dimension ``dim``) written after generation ``since`` (-1: all) and the
        record ids deleted after it; None when the model is still at generation ``since``."""
        raise NotImplementedError(f"{type(self).__name__} implements neither changes() nor view()")

    def index(self, model_id: str, dim: int) -> GalleryIndex:
        """The model's search index, brought up to date with the store (see ``refresh_ms``)."""
        key = (model_id, dim)
        with self._indexes_lock:
            entry = self._indexes.get(key)
            if entry is None:
                entry = self._indexes[key] = (threading.Lock(), GalleryIndex(dim, self.index_config))
        lock, index = entry
        with lock:
            now = time.monotonic()
            if index.generation < 0 or (now - index.checked_at) * 1e3 >= self.index_config.refresh_ms:
                news = self.changes(model_id, dim, index.generation)
                if news is not None:
                    index.apply(news)
                index.checked_at = now
        return index

    def replace_index(self, model_id: str, dim: int, index: GalleryIndex) -> GalleryIndex:
        """Serve ``model_id`` from ``index`` (built elsewhere from this store's rows: the bench)."""
        with self._indexes_lock:
            self._indexes[(model_id, dim)] = (threading.Lock(), index)
        return index

    def view(self, model_id: str, dim: int) -> GalleryView:
        """Every stored embedding of ``model_id`` with dimension ``dim`` (a snapshot)."""
        return self.index(model_id, dim).snapshot()

    def _wrote(self, model_id: str) -> None:
        """After a write of our own: the next ``view`` of that model asks the store (read-your-writes)."""
        with self._indexes_lock:
            for (model, _), (_, index) in self._indexes.items():
                if model == model_id:
                    index.checked_at = 0.0

    @abc.abstractmethod
    def count(self, model_id: str, identity: str | None = None) -> int: ...

    @abc.abstractmethod
    def delete(self, model_id: str, identity: str) -> int:
        """Remove an identity's embeddings under a model; return how many were removed."""

    @abc.abstractmethod
    def close(self) -> None: ...


# Versioned schema: MIGRATIONS[v - 1] takes a file from user_version v - 1 to v.
MIGRATIONS = (
    """
CREATE TABLE IF NOT EXISTS embeddings (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    identity      TEXT    NOT NULL,
    model_id      TEXT    NOT NULL,
    model_version TEXT    NOT NULL,
    dim           INTEGER NOT NULL CHECK (dim > 0),
    vector        BLOB    NOT NULL CHECK (length(vector) = 4 * dim),
    created_at    REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_model_identity ON embeddings (model_id, identity);
""",
    """
ALTER TABLE embeddings ADD COLUMN gen INTEGER NOT NULL DEFAULT 0;
CREATE INDEX embeddings_model_gen ON embeddings (model_id, gen);
CREATE TABLE generations (model_id TEXT PRIMARY KEY, gen INTEGER NOT NULL);
INSERT INTO generations SELECT DISTINCT model_id, 0 FROM embeddings;
CREATE TABLE deletions (model_id TEXT NOT NULL, gen INTEGER NOT NULL, record_id INTEGER NOT NULL);
CREATE INDEX deletions_model_gen ON deletions (model_id, gen);
""",
)
SCHEMA_VERSION = len(MIGRATIONS)
_BUMP = ("INSERT INTO generations (model_id, gen) VALUES (?, 1) "
         "ON CONFLICT (model_id) DO UPDATE SET gen = gen + 1 RETURNING gen")


class SQLiteGallery(GalleryStore):
    """SQLite in WAL mode behind one lock-guarded connection (plus the in-memory indexes)."""

    def __init__(self, path: str | Path, synchronous: str = "FULL", busy_timeout_s: float = 10.0,
                 index: GalleryIndexConfig | None = None):
        super().__init__(index)
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False,
                                   isolation_level=None)  # explicit BEGIN/COMMIT below
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._transaction():  # BEGIN IMMEDIATE: two processes opening a new file migrate it once
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise InvalidInput(f"gallery {self.path} has schema version {version}; this photoveil "
                                   f"reads up to {SCHEMA_VERSION}")
            for script in MIGRATIONS[version:]:
                for stmt in filter(str.strip, script.split(";")):
                    self._db.execute(stmt)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._closed = False

    # A transaction that is rolled back on any error and committed otherwise.
    class _Tx:
        def __init__(self, db: sqlite3.Connection, mode: str = "IMMEDIATE"):
            self.db, self.mode = db, mode

        def __enter__(self):
            self.db.execute(f"BEGIN {self.mode}")
            return self.db

        def __exit__(self, exc_type, exc, tb):
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
            return False

    def _transaction(self, mode: str = "IMMEDIATE") -> "_Tx":
        return self._Tx(self._db, mode)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("gallery is closed")

    def add(self, model_id, model_version, identity, vectors):
        check_identity(identity)
        vectors = check_vectors(vectors)
        return self._insert(model_id, model_version, [identity] * len(vectors), vectors)

    def add_many(self, model_id, model_version, identities, vectors):
        vectors = check_vectors(vectors)
        if len(identities) != len(vectors):
            raise InvalidInput(f"{len(identities)} identities for {len(vectors)} embeddings")
        for name in set(identities):
            check_identity(name)
        return self._insert(model_id, model_version, list(identities), vectors)

    def _insert(self, model_id, model_version, identities, vectors) -> list[int]:
        now, dim = time.time(), vectors.shape[1]
        with self._lock:
            self._check_open()
            ids = []
            with self._transaction() as db:
                gen = db.execute(_BUMP, (model_id,)).fetchone()[0]
                for identity, v in zip(identities, vectors):
                    cur = db.execute("INSERT INTO embeddings (identity, model_id, model_version, dim, vector, "
                                     "gen, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     (identity, model_id, model_version, dim, v.tobytes(), gen, now))
                    ids.append(int(cur.lastrowid))
        self._wrote(model_id)
        return ids

    def changes(self, model_id, dim, since):
        with self._lock:
            self._check_open()
            with self._transaction("DEFERRED") as db:  # one read snapshot for the counter and the rows
                row = db.execute("SELECT gen FROM generations WHERE model_id = ?", (model_id,)).fetchone()
                gen = row[0] if row else 0
                if gen == since:
                    return None
                rows = db.execute("SELECT id, identity, vector FROM embeddings WHERE model_id = ? AND dim = ? "
                                  "AND gen > ? AND gen <= ? ORDER BY id", (model_id, dim, since, gen)).fetchall()
                deleted = db.execute("SELECT record_id FROM deletions WHERE model_id = ? AND gen > ? AND gen <= ?",
                                     (model_id, since, gen)).fetchall() if since >= 0 else []
        return changes_from_rows(gen, rows, deleted, dim)

    def count(self, model_id, identity=None):
        with self._lock:
            self._check_open()
            if identity is None:
                q, args = "SELECT COUNT(*) FROM embeddings WHERE model_id = ?", (model_id,)
            else:
                q, args = "SELECT COUNT(*) FROM embeddings WHERE model_id = ? AND identity = ?", (model_id, identity)
            return int(self._db.execute(q, args).fetchone()[0])

    def delete(self, model_id, identity):
        check_identity(identity)
        with self._lock:
            self._check_open()
            with self._transaction() as db:
                ids = [r[0] for r in db.execute("SELECT id FROM embeddings WHERE model_id = ? AND identity = ?",
                                                (model_id, identity))]
                if ids:
                    gen = db.execute(_BUMP, (model_id,)).fetchone()[0]
                    db.execute("DELETE FROM embeddings WHERE model_id = ? AND identity = ?", (model_id, identity))
                    db.executemany("INSERT INTO deletions (model_id, gen, record_id) VALUES (?, ?, ?)",
                                   [(model_id, gen, i) for i in ids])
        self._wrote(model_id)
        return len(ids)

    def integrity_check(self) -> str:
        with self._lock:
            self._check_open()
            return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # Fold the WAL back into the main file so a copied .sqlite3 is complete.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


