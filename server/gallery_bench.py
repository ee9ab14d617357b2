"""``photoveil gallery bench``: Identify latency, throughput, recall and memory per store and index.

For each backend (sqlite: a temp file; postgres: ``--gallery-url``) and gallery size it
enrols ``entries`` synthetic identities, one unit vector each (uniform on the sphere, in
batches of ``BATCH`` rows per transaction), loads them into a fresh store object, and for
each index kind answers ``--queries`` single-query Identify calls (``store.view`` — which
asks the store for its generation, as a server does per call — then ``match``, top-1).
A query is an enrolled vector plus Gaussian noise at cosine ~0.8 to it (a new photo of an
enrolled face); the reference answer is exact search over every entry, and
``recall_at_1`` is the fraction of queries whose top-1 identity equals the exact one.
With ``--embeddings lfw`` the gallery is instead real embeddings of every LFW image by one
recognizer (:func:`lfw_set`; one held-out image per probed identity), and the records add
``top1_accuracy``: the probes whose top-1 is their true identity.

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
from dataclasses import dataclass
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


@dataclass
class Embeddings:
    """A gallery to enrol (``names[i]`` owns ``vectors[i]``) and the probes searched in it."""

    names: list[str]
    vectors: np.ndarray
    queries: np.ndarray
    query_names: list[str] | None   # the probes' true identities (real data only)
    data: str


def synthetic_set(entries: int, dim: int, n_queries: int, seed: int) -> Embeddings:
    vectors = synthetic(entries, dim, seed)
    return Embeddings([f"person-{i}" for i in range(entries)], vectors, probes(vectors, n_queries, seed), None,
                      "synthetic")


def lfw_set(model: str, lfw: str | None, n_queries: int, seed: int, cache_dir: str | None = None,
            limit: int = 0, log=print) -> Embeddings:
    """Real embeddings: every LFW image (landmark-aligned for ``model``; centre crop where
    BlazeFace finds no face) through the recognizer ``model``. One image of each of up to
    ``n_queries`` seeded identities with >= 2 images is the probe; all others are enrolled
    under their identity. The embeddings are cached in ``<cache>/gallery-bench-<model>.npz``."""
    import torch

    from photoveil.data.faces import scan_identity_folder
    from photoveil.facemodels import registry
    from photoveil.facemodels.align import align_faces
    from photoveil.facemodels.detect import NoFaceDetected, default_detector
    from photoveil.facemodels.embed import embed
    from photoveil.imageops import input_hw
    from photoveil.paths import cache_dir as resolve, default_lfw_dir

    folder = scan_identity_folder(lfw or default_lfw_dir())
    samples = folder.samples()
    if limit:
        samples = [samples[i] for i in sorted(np.random.default_rng(seed).choice(len(samples), min(limit, len(samples)),
                                                                              replace=False))]
    keys = [str(p) for p, _ in samples]
    cache = resolve(cache_dir) / f"gallery-bench-{model}.npz"
    known: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as z:
            known = dict(zip(z["paths"].tolist(), z["vectors"]))
    todo = [k for k in keys if k not in known]
    if todo:
        net = registry.load(model, cache_dir=cache_dir)
        size = input_hw(net)[0]
        detector = default_detector(cache_dir=cache_dir)
        t0 = time.perf_counter()
        for lo in range(0, len(todo), 64):
            faces = []
            for path in todo[lo:lo + 64]:
                try:
                    faces.append(align_faces([path], size, model=model, detector=detector, pick="center")[0])
                except NoFaceDetected:
                    faces.append(align_faces([path], size, alignment="center")[0])
            for path, e in zip(todo[lo:lo + 64], embed(net, torch.stack(faces)).numpy()):
                known[path] = e
            log(f"  embedded {min(lo + 64, len(todo))}/{len(todo)} LFW images with {model} "
                f"({time.perf_counter() - t0:.0f} s)")
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, paths=np.array(list(known)), vectors=np.stack(list(known.values())).astype(np.float32))
        tmp.replace(cache)
    names = [folder.identities[label] for _, label in samples]
    vectors = unit_rows(np.stack([known[k] for k in keys]))
    by_name: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_name.setdefault(n, []).append(i)
    multi = sorted(n for n, rows in by_name.items() if len(rows) >= 2)
    picked = sorted(np.random.default_rng(seed + 1).choice(len(multi), min(n_queries, len(multi)), replace=False))
    probe_rows = {by_name[multi[i]][-1] for i in picked}
    keep = [i for i in range(len(names)) if i not in probe_rows]
    order = sorted(probe_rows)
    return Embeddings([names[i] for i in keep], vectors[keep], vectors[order], [names[i] for i in order],
                      f"lfw-{model}")


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


def bench_one(backend: str, where: str, gallery: Embeddings, kinds: list[str], nprobes: list[int], log,
              efs: list[int] = (GalleryIndexConfig.ef_search,)) -> list[dict]:
    model = f"bench-{uuid.uuid4().hex[:8]}"
    vectors, names, queries = gallery.vectors, gallery.names, gallery.queries
    entries, dim = vectors.shape
    store = _open(backend, where)
    try:
        t0 = time.perf_counter()
        for lo in range(0, entries, BATCH):
            store.add_many(model, "bench", names[lo:lo + BATCH], vectors[lo:lo + BATCH])
        enrol_rate = entries / (time.perf_counter() - t0)
    finally:
        store.close()
    log(f"  {backend} {entries} ({gallery.data}): enrolled at {enrol_rate:.0f} rows/s")
    reference = GalleryIndex(dim, GalleryIndexConfig(kind="exact")).load(
        Changes(0, np.arange(entries, dtype=np.int64), names, vectors, np.zeros(0, np.int64)))
    view = reference.snapshot()  # in chunks: 1000 queries x 10^6 entries at once is a 4 GB matrix
    exact_top1 = [r[0][0] for lo in range(0, len(queries), 32) for r in match(view, queries[lo:lo + 32], 1)]
    del view
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
                truth = ({"top1_accuracy": round(float(np.mean([a == b for a, b in zip(top1, gallery.query_names)])), 4)}
                         if gallery.query_names else {})
                records.append({
                    "backend": backend, "index": kind, "nprobe": nprobe or None,
                    "ef_search": value if knob == "ef_search" else None, "entries": entries, "dim": dim,
                    "queries": len(timed), "p50_ms": round(_percentile(ms, 50), 3),
                    "p99_ms": round(_percentile(ms, 99), 3), "qps": round(1e3 / np.mean(ms), 1),
                    "recall_at_1": round(recall, 4), "index_mb": round(index.memory_bytes() / 2 ** 20, 1),
                    "build_s": round(build_s, 2), "load_s": round(load_s, 2), "enrol_rows_per_s": round(enrol_rate),
                    "rss_max_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                    "data": gallery.data, **truth})
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


def check_args(backends: list[str], sizes: list[int], dim: int, kinds: list[str], nprobes: list[int],
               n_queries: int, gallery_url: str, efs: list[int]) -> None:
    """The bench's arguments, checked before any data is made or model loads."""
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


def run_bench(backends: list[str], sizes: list[int], dim: int = 128, kinds: list[str] = ("exact", "flat", "ivf"),
              nprobes: list[int] = (GalleryIndexConfig.nprobe,), n_queries: int = 1000, gallery_url: str = "",
              seed: int = 0, log=print, efs: list[int] = (GalleryIndexConfig.ef_search,),
              real: Embeddings | None = None) -> list[dict]:
    """One record per (backend, gallery, index, knob); the galleries are synthetic ones of
    each of ``sizes`` entries, or the ``real`` one (:func:`lfw_set`) instead."""
    check_args(backends, sizes, dim, kinds, nprobes, n_queries, gallery_url, efs)
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="photoveil-gallery-bench-") as tmp:
        for backend in backends:
            for n in ([len(real.names)] if real is not None else sizes):
                where = gallery_url if backend == "postgres" else str(Path(tmp) / f"bench-{n}.sqlite3")
                gallery = real if real is not None else synthetic_set(n, dim, n_queries, seed)
                records += bench_one(backend, where, gallery, list(kinds), list(nprobes), log, list(efs))
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
