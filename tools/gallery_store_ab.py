"""A/B of the SQLite gallery store: enrol and single-query Identify, the same calls on two versions.

Usage (run it once per checkout, alternating, on a quiet machine):

    python tools/gallery_store_ab.py ENTRIES LABEL      # e.g. 20000 new

Prints one JSON line: enrol p50/p99, Identify p50/p99 over 1000 queries, and Identify right after
an enrol (the cached view has to catch up each time), all in ms. It only uses calls that exist
both before and after issue 25 (``SQLiteGallery.add`` / ``view`` and ``match``, which moved from
``gallery`` to ``vector_index``), so an older checkout runs it unchanged.
"""
import json
import sys
import tempfile
import time

import numpy as np

from photoveil.server import gallery

try:
    from photoveil.server.vector_index import match
except ImportError:  # before issue 25
    match = gallery.match

DIM, QUERIES, MIXED = 128, 1000, 200


def ms_percentile(samples: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(samples, q)), 3)


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main(entries: int, label: str) -> dict:
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((entries, DIM)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    queries = vec[rng.integers(0, entries, QUERIES)] + 0.05 * rng.standard_normal((QUERIES, DIM)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        g = gallery.SQLiteGallery(f"{d}/g.db")
        t_add = [timed(g.add, "m", "1", f"p{i}", vec[i:i + 1]) for i in range(entries)]
        match(g.view("m", DIM), queries[:1], 1)  # warm the view
        t_id = [timed(lambda q: match(g.view("m", DIM), q, 1), queries[i:i + 1]) for i in range(QUERIES)]
        t_mixed = []
        for i in range(MIXED):
            g.add("m", "1", f"new{i}", queries[i:i + 1])
            t_mixed.append(timed(lambda q: match(g.view("m", DIM), q, 1), queries[i:i + 1]))
        g.close()
    return {"code": label, "entries": entries,
            "enrol_p50_ms": ms_percentile(t_add, 50), "enrol_p99_ms": ms_percentile(t_add, 99),
            "identify_p50_ms": ms_percentile(t_id, 50), "identify_p99_ms": ms_percentile(t_id, 99),
            "identify_after_enrol_p50_ms": ms_percentile(t_mixed, 50),
            "identify_after_enrol_p99_ms": ms_percentile(t_mixed, 99)}


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
        sys.exit("usage: python tools/gallery_store_ab.py ENTRIES LABEL  (ENTRIES a positive int)")
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2])))
