"""The gallery of enrolled embeddings: a small store interface and its SQLite version.

One row per enrolled embedding (identity, model id, model version, vector, created
time). ``SQLiteGallery`` uses WAL and one transaction per ``add``/``delete``; with
``synchronous=FULL`` a record is on disk before ``add`` returns, so an acknowledged
enrolment survives a crash of the server process. A shared database (Postgres with
pgvector, ...) replaces it by implementing :class:`GalleryStore`.
"""
from __future__ import annotations

import abc
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from photoveil.errors import InvalidInput

MAX_IDENTITY_CHARS = 128


def check_identity(identity: str) -> str:
    if not identity or len(identity) > MAX_IDENTITY_CHARS or not identity.isprintable():
        raise InvalidInput(f"identity {identity[:40]!r} must be 1..{MAX_IDENTITY_CHARS} printable characters")
    return identity


@dataclass(frozen=True)
class GalleryView:
    """All embeddings of one model: row i of ``vectors`` belongs to ``identities[i]``."""

    ids: np.ndarray          # int64 [m]
    identities: list[str]
    vectors: np.ndarray      # float32 [m, d], rows L2-normalised

    def __len__(self) -> int:
        return len(self.identities)


class GalleryStore(abc.ABC):
    """What the server needs from a gallery; implementations must be thread-safe."""

    @abc.abstractmethod
    def add(self, model_id: str, model_version: str, identity: str, vectors: np.ndarray) -> list[int]:
        """Store each row of ``vectors`` [n, d]; return the record ids once committed."""

    @abc.abstractmethod
    def view(self, model_id: str, dim: int) -> GalleryView:
        """Every stored embedding of ``model_id`` with dimension ``dim``."""

    @abc.abstractmethod
    def count(self, model_id: str, identity: str | None = None) -> int: ...

    @abc.abstractmethod
    def delete(self, model_id: str, identity: str) -> int:
        """Remove an identity's embeddings under a model; return how many were removed."""

    @abc.abstractmethod
    def close(self) -> None: ...


_SCHEMA = """
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
"""
SCHEMA_VERSION = 1


class SQLiteGallery(GalleryStore):
    """SQLite in WAL mode behind one lock-guarded connection (plus an in-memory matrix cache)."""

    def __init__(self, path: str | Path, synchronous: str = "FULL", busy_timeout_s: float = 10.0):
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
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise InvalidInput(f"gallery {self.path} has schema version {version}; this photoveil "
                               f"reads up to {SCHEMA_VERSION}")
        with self._transaction():
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(stmt)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._cache: dict[tuple[str, int], tuple[int, GalleryView]] = {}
        self._generation = 0  # bumped on our own writes; data_version covers other connections
        self._closed = False

    # A transaction that is rolled back on any error and committed otherwise.
    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb):
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
            return False

    def _transaction(self) -> "_Tx":
        return self._Tx(self._db)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("gallery is closed")

    def add(self, model_id, model_version, identity, vectors):
        check_identity(identity)
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
            raise InvalidInput(f"embeddings must be [n, d] with n, d >= 1, got {list(vectors.shape)}")
        if not np.isfinite(vectors).all():
            raise InvalidInput("embeddings hold NaN/Inf; nothing was enrolled")
        now = time.time()
        rows = [(identity, model_id, model_version, vectors.shape[1], v.tobytes(), now) for v in vectors]
        with self._lock:
            self._check_open()
            ids = []
            with self._transaction() as db:
                for row in rows:
                    cur = db.execute("INSERT INTO embeddings (identity, model_id, model_version, dim, vector, "
                                     "created_at) VALUES (?, ?, ?, ?, ?, ?)", row)
                    ids.append(int(cur.lastrowid))
            self._generation += 1
        return ids

    def view(self, model_id, dim):
        with self._lock:
            self._check_open()
            stamp = (self._generation << 32) + self._db.execute("PRAGMA data_version").fetchone()[0]
            hit = self._cache.get((model_id, dim))
            if hit is not None and hit[0] == stamp:
                return hit[1]
            rows = self._db.execute("SELECT id, identity, vector FROM embeddings WHERE model_id = ? AND dim = ? "
                                    "ORDER BY id", (model_id, dim)).fetchall()
            vectors = (np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dim)
                       .astype(np.float32)) if rows else np.zeros((0, dim), np.float32)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
            view = GalleryView(np.array([r[0] for r in rows], np.int64), [r[1] for r in rows], vectors)
            self._cache[(model_id, dim)] = (stamp, view)
            return view

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
                n = db.execute("DELETE FROM embeddings WHERE model_id = ? AND identity = ?",
                               (model_id, identity)).rowcount
            self._generation += 1
            return int(n)

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


def match(view: GalleryView, queries: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
    """Per query row, the ``top_k`` identities by best cosine similarity (highest first)."""
    if len(view) == 0:
        return [[] for _ in range(len(queries))]
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    sims = np.clip(q.astype(np.float32) @ view.vectors.T, -1.0, 1.0)  # [n, m]; clip float rounding
    # Max over each identity's embeddings: group columns by identity, then reduceat.
    names, column = np.unique(np.asarray(view.identities, dtype=object), return_inverse=True)
    order = np.argsort(column, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(column[order]) != 0])
    best = np.maximum.reduceat(sims[:, order], starts, axis=1)  # [n, identities]
    out = []
    for row in best:
        order = np.argsort(-row, kind="stable")[:top_k]
        out.append([(names[j], float(row[j])) for j in order])
    return out
