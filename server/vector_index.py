"""Vector search over one model's gallery: an in-memory index kept in step with the store.

A :class:`GalleryIndex` holds every embedding of one (model id, dimension) — record ids
(ascending), unit vectors, identity codes — and, by ``gallery_index.kind``, a FAISS index
over them: ``flat`` (exact inner product), ``ivf`` (inverted lists of 8-bit scalar-quantized
vectors, approximate; ``nprobe`` lists scanned per query, candidates re-scored exactly),
``hnsw`` (a navigable small-world graph of the float vectors, approximate; ``ef_search``
candidates per query) or, for ``auto``, flat below ``ivf_threshold`` entries and IVF from
there on. ``exact`` keeps no FAISS index: a numpy scan, the reference every other
kind is measured against (``photoveil gallery bench``).

It is updated incrementally from the store's change feed (:class:`Changes`: rows of
generations after the one it holds, and the record ids deleted since): additions are
appended, deletions compacted out; the IVF index is retrained only when the gallery has
grown 4x since it was trained. An HNSW graph cannot remove a node: a deleted row stays in
the graph but is never answered (a snapshot drops every id it does not hold), and the
graph is rebuilt once a quarter of its nodes are deleted ones. :class:`GalleryView` is an immutable snapshot of it.
"""
from __future__ import annotations

import importlib.util
import math
import os
import threading
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from photoveil.server.config import GalleryIndexConfig

IVF_MIN_LISTS = 16
IVF_POINTS_PER_LIST = 39        # FAISS' own minimum of training points per centroid
IVF_TRAIN_POINTS_PER_LIST = 40  # training sample size (more adds build time, not recall)
IVF_TRAIN_ITERATIONS = 10       # k-means iterations (FAISS' default 25 triples the build time)
_HAVE_FAISS = importlib.util.find_spec("faiss") is not None  # optional: photoveil[scale]
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
IVF_RETRAIN_GROWTH = 4          # retrain once the gallery is this many times the trained size
HNSW_EF_CONSTRUCTION = 64       # build-time candidate list (FAISS default 40: a few points of recall less)
HNSW_REBUILD_DELETED = 0.25     # rebuild the graph once this part of its nodes are deleted rows


def _faiss():
    """FAISS, searching one query per thread: the server's parallelism is across requests, and
    OpenMP fan-out of a single query only adds latency on a busy machine (gallery bench)."""
    import faiss

    faiss.omp_set_num_threads(1)
    return faiss


def check_index_config(config: GalleryIndexConfig) -> None:
    """``flat``/``ivf`` need FAISS; ``auto`` without it searches exactly (numpy)."""
    if config.kind in ("flat", "ivf", "hnsw") and not _HAVE_FAISS:
        from photoveil.errors import InvalidInput

        raise InvalidInput(f"gallery_index.kind {config.kind!r} needs faiss-cpu: pip install 'photoveil[scale]' "
                           "(or kind = \"exact\")")


def ivf_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: ~4 sqrt(n) (FAISS' guideline), at least IVF_MIN_LISTS."""
    return max(IVF_MIN_LISTS, int(4 * math.sqrt(n)))


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class Changes:
    """What changed in a model's gallery after generation ``since``, up to ``generation``."""

    generation: int
    ids: np.ndarray          # int64 [k] added record ids, ascending
    identities: list[str]    # [k]
    vectors: np.ndarray      # float32 [k, d]
    deleted: np.ndarray      # int64 record ids removed (may name ids never seen: a no-op)


class GalleryView:
    """All embeddings of one model at one moment: row i belongs to ``identities[i]``.

    ``GalleryView(ids, identities, vectors)`` builds one from plain lists; the index builds
    them from its buffers (``codes``/``labels``) without a per-row Python list."""

    def __init__(self, ids: np.ndarray, identities: list[str] | None, vectors: np.ndarray,
                 codes: np.ndarray | None = None, labels: list[str] | None = None, searcher=None):
        self.ids = np.asarray(ids, np.int64)
        self.vectors = vectors
        if codes is None:
            code_of: dict[str, int] = {}
            codes = np.array([code_of.setdefault(n, len(code_of)) for n in identities or []], np.int32)
            labels = list(code_of)
        self.codes, self.labels, self.searcher = codes, labels, searcher

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def identities(self) -> list[str]:
        labels = self.labels
        return [labels[c] for c in self.codes.tolist()]

    def rows_of(self, identity: str) -> np.ndarray:
        """Positions of ``identity``'s rows (no per-row Python loop)."""
        try:
            code = self.labels.index(identity)
        except ValueError:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.codes == code)

    def nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows most similar to each unit query: (scores, row positions; -1 = none), best first."""
        m = len(self)
        k = min(k, m)
        if self.searcher is not None:
            _, found = self.searcher.search(queries, k)
            pos = np.minimum(np.searchsorted(self.ids, found), m - 1)
            ok = (found >= 0) & (self.ids[pos] == found)  # ids added after this snapshot: dropped
            exact = np.einsum("qd,qkd->qk", queries, self.vectors[pos])  # re-score from the float rows
            scores, pos = np.where(ok, exact, -np.inf), np.where(ok, pos, -1)
            order = np.argsort(-scores, axis=1, kind="stable")
            return np.take_along_axis(scores, order, axis=1), np.take_along_axis(pos, order, axis=1)
        sims = queries @ self.vectors.T
        if k < m:
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(m), (len(queries), m))
        part = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(top, order, axis=1)


def match(view: GalleryView, queries: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
    """Per query row, the ``top_k`` identities by best cosine similarity (highest first).

    An identity's score is its best row, so walking rows best-first and keeping the first
    ``top_k`` distinct identities is the answer; the candidate window widens until it holds
    ``top_k`` identities or every row."""
    if len(view) == 0:
        return [[] for _ in range(len(queries))]
    q = unit_rows(queries)
    m = len(view)
    out: list[list[tuple[str, float]] | None] = [None] * len(q)
    todo = np.arange(len(q))
    width = min(m, max(4 * top_k, 16))
    while len(todo):
        scores, positions = view.nearest(q[todo], width)
        again = []
        for row, s_row, p_row in zip(todo, scores, positions):
            seen: dict[int, float] = {}
            for s, p in zip(s_row.tolist(), p_row.tolist()):
                if p < 0:
                    continue
                code = int(view.codes[p])
                if code not in seen:
                    seen[code] = s
                    if len(seen) == top_k:
                        break
            if len(seen) < top_k and width < m:
                again.append(row)
            else:
                out[row] = [(view.labels[c], float(min(1.0, max(-1.0, s)))) for c, s in seen.items()]
        todo = np.array(again, dtype=np.int64)
        width = min(m, width * 4)
    return out  # type: ignore[return-value]


class GalleryIndex:
    """One model's embeddings and their search index; ``apply`` changes, take ``snapshot``s.

    Not safe for concurrent ``apply`` calls (the store serialises them); ``search`` may run
    in any thread while one applies."""

    def __init__(self, dim: int, config: GalleryIndexConfig):
        self.dim, self.config = dim, config
        self.generation = -1    # nothing loaded yet
        self.checked_at = 0.0   # monotonic time the store was last asked for changes
        self._n = 0
        self._ids = np.empty(0, np.int64)
        self._vectors = np.empty((0, dim), np.float32)
        self._codes = np.empty(0, np.int32)
        self._labels: list[str] = []
        self._code_of: dict[str, int] = {}
        self._faiss = self._quantizer = None
        self.kind = "exact"
        self._trained_at = 0
        self._dead = 0          # hnsw: deleted rows still in the graph
        self._lock = threading.Lock()  # FAISS add/remove vs search
        self._view: GalleryView | None = None

    def __len__(self) -> int:
        return self._n

    # -- updates ------------------------------------------------------------------------

    def apply(self, changes: Changes) -> None:
        if len(changes.deleted):
            self._delete(changes.deleted)
        if len(changes.ids):
            self._append(changes.ids, changes.identities, changes.vectors)
        self._retune()
        self.generation = changes.generation
        self._view = None

    def _delete(self, deleted: np.ndarray) -> None:
        n = self._n
        keep = ~np.isin(self._ids[:n], deleted)
        if keep.all():
            return
        # New arrays: snapshots taken before keep theirs.
        self._ids, self._vectors, self._codes = self._ids[:n][keep], self._vectors[:n][keep], self._codes[:n][keep]
        self._n = len(self._ids)
        if self.kind == "hnsw":  # the graph keeps the nodes; snapshots no longer hold their ids
            self._dead += n - self._n
        elif self._faiss is not None:
            with self._lock:
                self._faiss.remove_ids(np.ascontiguousarray(deleted, np.int64))

    def _append(self, ids: np.ndarray, identities: list[str], vectors: np.ndarray) -> None:
        n, k = self._n, len(ids)
        ids = np.asarray(ids, np.int64)
        vectors = unit_rows(vectors)
        codes = np.empty(k, np.int32)
        for i, name in enumerate(identities):  # labels only grow: snapshots share the list
            code = self._code_of.get(name)
            if code is None:
                code = self._code_of[name] = len(self._labels)
                self._labels.append(name)
            codes[i] = code
        if n + k > len(self._ids):  # grow into new arrays (capacity doubling)
            cap = max(n + k, 2 * len(self._ids), 1024)
            self._ids = np.concatenate([self._ids[:n], np.empty(cap - n, np.int64)])
            self._vectors = np.concatenate([self._vectors[:n], np.empty((cap - n, self.dim), np.float32)])
            self._codes = np.concatenate([self._codes[:n], np.empty(cap - n, np.int32)])
        # Rows past n are in no snapshot, so they can be written in place.
        self._ids[n:n + k], self._vectors[n:n + k], self._codes[n:n + k] = ids, vectors, codes
        self._n = n + k
        if (n and ids[0] <= self._ids[n - 1]) or (k > 1 and np.any(np.diff(ids) <= 0)):
            order = np.argsort(self._ids[:self._n], kind="stable")  # ids out of order: keep them sorted
            self._ids, self._vectors, self._codes = (self._ids[:self._n][order], self._vectors[:self._n][order],
                                                     self._codes[:self._n][order])
        if self._faiss is not None:
            with self._lock:
                self._faiss.add_with_ids(vectors, ids)

    def _wanted(self) -> str:
        n, kind = self._n, self.config.kind
        if kind == "auto" and not _HAVE_FAISS:
            return "exact"
        ivf_ok = n >= IVF_POINTS_PER_LIST * IVF_MIN_LISTS
        if kind == "auto":
            # hysteresis: once IVF, drop back to flat only below half the threshold
            threshold = self.config.ivf_threshold // (2 if self.kind == "ivf" else 1)
            kind = "ivf" if n >= threshold else "flat"
        return "flat" if kind == "ivf" and not ivf_ok else kind

    def _retune(self) -> None:
        wanted = self._wanted()
        stale = (wanted == "ivf" and self._n > IVF_RETRAIN_GROWTH * self._trained_at) or (
            wanted == "hnsw" and self._dead > HNSW_REBUILD_DELETED * (self._n + self._dead))
        if wanted == self.kind and not stale:
            return
        index = None
        if wanted != "exact":
            faiss = _faiss()
            vectors, ids = self._vectors[:self._n], self._ids[:self._n]
            if wanted == "flat":
                index = faiss.IndexIDMap(faiss.IndexFlatIP(self.dim))
            elif wanted == "hnsw":
                graph = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
                graph.hnsw.efSearch = self.config.ef_search
                self._quantizer = graph  # the id map does not own it: keep it alive
                index = faiss.IndexIDMap(graph)
                faiss.omp_set_num_threads(_CORES)  # building the graph is one big job: every core
                try:
                    index.add_with_ids(vectors, ids)
                finally:
                    faiss.omp_set_num_threads(1)
                self._dead = 0
            else:
                nlist = min(ivf_lists(self._n), self._n // IVF_POINTS_PER_LIST)
                quantizer = faiss.IndexFlatIP(self.dim)
                # 8-bit codes: a quarter of the bytes to scan per probed list; the candidates are
                # re-scored exactly from the float rows (GalleryView.nearest), so ranking stays exact
                index = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                      faiss.METRIC_INNER_PRODUCT)
                index.cp.niter = IVF_TRAIN_ITERATIONS
                self._quantizer = quantizer  # the index does not own it: keep it alive
                sample = np.random.default_rng(0).choice(self._n, min(self._n, IVF_TRAIN_POINTS_PER_LIST * nlist),
                                                         replace=False)
                faiss.omp_set_num_threads(_CORES)  # training is one big job: every core
                try:
                    index.train(vectors[np.sort(sample)])
                finally:
                    faiss.omp_set_num_threads(1)
                index.nprobe = min(self.config.nprobe, nlist)
                self._trained_at = self._n
            if wanted != "hnsw":
                index.add_with_ids(vectors, ids)
        with self._lock:
            self._faiss, self.kind = index, wanted

    def set_nprobe(self, nprobe: int) -> None:
        """IVF lists scanned per query from now on (no rebuild)."""
        self.config = GalleryIndexConfig(**{**self.config.__dict__, "nprobe": nprobe})
        if self.kind == "ivf":
            with self._lock:
                self._faiss.nprobe = min(nprobe, self._faiss.nlist)

    def set_ef_search(self, ef: int) -> None:
        """HNSW candidates per query from now on (no rebuild)."""
        self.config = GalleryIndexConfig(**{**self.config.__dict__, "ef_search": ef})
        if self.kind == "hnsw":
            with self._lock:
                self._quantizer.hnsw.efSearch = ef

    def load(self, changes: Changes) -> "GalleryIndex":
        """``apply`` on an empty index; returns it (for building one from rows in hand)."""
        self.apply(changes)
        return self

    def as_changes(self) -> Changes:
        """The rows held, as the change feed that would rebuild this index from empty."""
        n = self._n
        return Changes(self.generation, self._ids[:n], self.snapshot().identities, self._vectors[:n],
                       np.zeros(0, np.int64))

    # -- reads --------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS top-``k`` (scores, record ids; -1 = none) of unit ``queries``."""
        with self._lock:
            return self._faiss.search(np.ascontiguousarray(queries, np.float32), k)

    def snapshot(self) -> GalleryView:
        if self._view is None:
            n = self._n
            self._view = GalleryView(self._ids[:n], None, self._vectors[:n], codes=self._codes[:n],
                                     labels=self._labels, searcher=self if self._faiss is not None else None)
        return self._view

    def memory_bytes(self) -> int:
        """Bytes held: the row buffers plus the FAISS index's vectors (ids and lists included)."""
        own = self._ids.nbytes + self._vectors.nbytes + self._codes.nbytes
        if self._faiss is None:
            return own
        ntotal = self._faiss.ntotal
        if self.kind == "ivf":  # 1-byte codes + ids, and the centroids
            extra = ntotal * (self.dim + 8) + self._faiss.nlist * 4 * self.dim
        elif self.kind == "hnsw":  # float vectors + ids, and ~2M level-0 links (int32) per node
            extra = ntotal * (4 * self.dim + 8 + 4 * 2 * self.config.hnsw_m)
        else:
            extra = ntotal * (4 * self.dim + 8)
        return own + extra
