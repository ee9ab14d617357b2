"""``photoveil gallery bench``: Identify latency, throughput, recall and memory per store and index.

For each backend (sqlite: a temp file; postgres: ``--gallery-url``) and gallery size it
enrols ``entries`` synthetic identities, one unit vector each (uniform on the sphere, in
batches of ``BATCH`` rows per transaction), loads them into a fresh store object, and for
each index kind answers ``--queries`` single-query Identify calls (``store.view`` — which
asks the store for its generation, as a server does per call — then ``match``, top-1).
A query is an enrolled vector plus Gaussian noise at cosine ~0.8 to it (a new photo of an
enrolled face); the reference answer is exact search over every entry, and
``recall_at_1`` is the fraction of queries whose top-1 identity equals the exact one.

Records: ``backend, index, nprobe`` (ivf), ``ef_search`` (hnsw), ``entries, dim, queries,
p50_ms, p99_ms, qps`` (single thread, closed loop), ``recall_at_1``, ``index_mb`` (rows + index), ``build_s`` (index
build/train from loaded rows), ``load_s`` (rows read from the store), ``enrol_rows_per_s``,
``rss_max_mb`` (the bench process' peak resident memory so far). Exact and flat scans read
every vector per query, so they are timed on the first 200 queries.
"""
from __future__ import annotations

import json
import resource
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from photoveil.errors import InvalidInput
from photoveil.server.config import GALLERY_INDEXES, GalleryIndexConfig
from photoveil.server.gallery import GalleryStore, SQLiteGallery, match
from photoveil.server.vector_index import Changes, GalleryIndex, unit_rows

BACKENDS = ("sqlite", "postgres")
BATCH = 50_000
QUERY_COSINE = 0.8
SCAN_TIMED_QUERIES = 200  # exact and flat read every vector per query (~0.15 s at 10^6 here): time a subset
COLUMNS = ("backend", "index", "nprobe", "ef_search", "entries", "dim", "p50_ms", "p99_ms", "qps", "recall_at_1", "index_mb",
           "build_s", "load_s", "enrol_rows_per_s")


def synthetic(n: int, dim: int, seed: int) -> np.ndarray:
    return unit_rows(np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32))


def probes(gallery: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    rows = gallery[rng.integers(0, len(gallery), n)]
    sigma = np.sqrt(1 / QUERY_COSINE ** 2 - 1) / np.sqrt(gallery.shape[1])  # noise norm s: cos = 1/sqrt(1+s^2)
    return unit_rows(rows + sigma * rng.normal(size=rows.shape).astype(np.float32))


def _percentile(ms: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(ms), q)) if ms else float("nan")


def _open(backend: str, where: str) -> GalleryStore:
    if backend == "sqlite":
        return SQLiteGallery(where, synchronous="NORMAL")  # bulk load speed; the bench measures reads
    from photoveil.server.gallery_pg import PostgresGallery

    return PostgresGallery(where, pool_size=2)


def _time_queries(store: GalleryStore, model: str, dim: int, queries: np.ndarray) -> tuple[list[float], list[str]]:
    ms, top1 = [], []
    for q in queries:
        t0 = time.perf_counter()
        got = match(store.view(model, dim), q[None], 1)
        ms.append((time.perf_counter() - t0) * 1e3)
        top1.append(got[0][0][0])
    return ms, top1


def bench_one(backend: str, where: str, entries: int, dim: int, kinds: list[str], nprobes: list[int],
              n_queries: int, seed: int, log, efs: list[int] = (64,)) -> list[dict]:
    model = f"bench-{uuid.uuid4().hex[:8]}"
    vectors = synthetic(entries, dim, seed)
    names = [f"person-{i}" for i in range(entries)]
    store = _open(backend, where)
    try:
        t0 = time.perf_counter()
        for lo in range(0, entries, BATCH):
            store.add_many(model, "bench", names[lo:lo + BATCH], vectors[lo:lo + BATCH])
        enrol_rate = entries / (time.perf_counter() - t0)
    finally:
        store.close()
    log(f"  {backend} {entries}: enrolled at {enrol_rate:.0f} rows/s")
    queries = probes(vectors, n_queries, seed)
    reference = GalleryIndex(dim, GalleryIndexConfig(kind="exact")).load(
        Changes(0, np.arange(entries, dtype=np.int64), names, vectors, np.zeros(0, np.int64)))
    exact_top1 = [r[0][0] for r in match(reference.snapshot(), queries, 1)]
    del reference
    records = []
    store = _open(backend, where)  # a fresh process's view: every row read back from the store
    try:
        t0 = time.perf_counter()
        loaded = store.index(model, dim)
        load_s = time.perf_counter() - t0
        rows = loaded.as_changes()
        for kind in kinds:
            t0 = time.perf_counter()
            index = store.replace_index(model, dim, GalleryIndex(dim, GalleryIndexConfig(kind=kind)).load(rows))
            build_s = time.perf_counter() - t0
            knobs = [("nprobe", v) for v in nprobes] if kind == "ivf" else (
                [("ef_search", v) for v in efs] if kind == "hnsw" else [(None, 0)])
            for knob, value in knobs:
                nprobe = value if knob == "nprobe" else 0
                if knob == "nprobe":
                    index.set_nprobe(value)
                elif knob == "ef_search":
                    index.set_ef_search(value)
                timed = queries[:SCAN_TIMED_QUERIES] if kind in ("exact", "flat") else queries
                _time_queries(store, model, dim, timed[:20])  # warm-up
                ms, top1 = _time_queries(store, model, dim, timed)
                recall = float(np.mean([a == b for a, b in zip(top1, exact_top1)]))  # zip: the timed ones
                records.append({
                    "backend": backend, "index": kind, "nprobe": nprobe or None,
                    "ef_search": value if knob == "ef_search" else None, "entries": entries, "dim": dim,
                    "queries": len(timed), "p50_ms": round(_percentile(ms, 50), 3),
                    "p99_ms": round(_percentile(ms, 99), 3), "qps": round(1e3 / np.mean(ms), 1),
                    "recall_at_1": round(recall, 4), "index_mb": round(index.memory_bytes() / 2 ** 20, 1),
                    "build_s": round(build_s, 2), "load_s": round(load_s, 2), "enrol_rows_per_s": round(enrol_rate),
                    "rss_max_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                    "data": "synthetic"})
                r = records[-1]
                log(f"    {kind}{f' {knob} {value}' if knob else ''}: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                    f"recall@1 {r['recall_at_1']}, {r['index_mb']} MB, built in {r['build_s']} s")
    finally:
        store.close()
    if backend == "postgres":
        _drop(where, model)
    return records


def _drop(url: str, model: str) -> None:
    """Remove the bench's rows from the database it was given."""
    import psycopg

    with psycopg.connect(url) as conn:
        for table in ("embeddings", "generations", "deletions"):
            conn.execute(f"DELETE FROM {table} WHERE model_id = %s", (model,))


def run_bench(backends: list[str], sizes: list[int], dim: int = 128, kinds: list[str] = ("exact", "flat", "ivf"),
              nprobes: list[int] = (32,), n_queries: int = 1000, gallery_url: str = "", seed: int = 0,
              log=print, efs: list[int] = (64,)) -> list[dict]:
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        raise InvalidInput(f"--backends {','.join(backends)!r}: accepted {', '.join(BACKENDS)}")
    bad = [k for k in kinds if k not in GALLERY_INDEXES or k == "auto"]
    if bad or not kinds:
        raise InvalidInput(f"--indexes {','.join(kinds)!r}: accepted exact, flat, ivf, hnsw")
    if not sizes or any(not 100 <= s <= 10_000_000 for s in sizes):
        raise InvalidInput("--sizes must be integers in 100..10000000")
    if not 2 <= dim <= 4096 or not 10 <= n_queries <= 100_000 or any(not 1 <= p <= 65536 for p in nprobes):
        raise InvalidInput("--dim must be in 2..4096, --queries in 10..100000, --nprobe values in 1..65536")
    if any(not 1 <= e <= 65536 for e in efs):
        raise InvalidInput("--ef-search values must be in 1..65536")
    if "postgres" in backends and not gallery_url:
        raise InvalidInput("--backends postgres needs --gallery-url postgresql://... (a database it may write to)")
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="photoveil-gallery-bench-") as tmp:
        for backend in backends:
            for n in sizes:
                where = gallery_url if backend == "postgres" else str(Path(tmp) / f"bench-{n}.sqlite3")
                records += bench_one(backend, where, n, dim, list(kinds), list(nprobes), n_queries, seed, log,
                                     list(efs))
    return records


def table(records: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in records:
        lines.append("| " + " | ".join("-" if r.get(c) is None else str(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def write(records: list[dict], out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gallery_bench.json").write_text(json.dumps({"records": records}, indent=2) + "\n")
    (out / "gallery_bench.md").write_text(table(records) + "\n")
