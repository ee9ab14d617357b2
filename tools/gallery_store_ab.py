"""A/B: SQLite gallery enrol + single-query Identify, same calls on the old and the new code."""
import json, sys, tempfile, time
import numpy as np
from photoveil.server import gallery as G
match = getattr(G, "match", None)
if match is None:
    from photoveil.server.vector_index import match
n, dim = int(sys.argv[1]), 128
rng = np.random.default_rng(0)
vec = rng.standard_normal((n, dim)).astype(np.float32)
vec /= np.linalg.norm(vec, axis=1, keepdims=True)
with tempfile.TemporaryDirectory() as d:
    g = G.SQLiteGallery(f"{d}/g.db")
    t_add = []
    for i in range(n):
        t0 = time.perf_counter(); g.add("m", "1", f"p{i}", vec[i:i + 1]); t_add.append(time.perf_counter() - t0)
    q = vec[rng.integers(0, n, 1000)] + 0.05 * rng.standard_normal((1000, dim)).astype(np.float32)
    match(g.view("m", dim), q[:1], 1)
    t_id, t_mixed = [], []
    for i in range(1000):
        t0 = time.perf_counter(); match(g.view("m", dim), q[i:i + 1], 1); t_id.append(time.perf_counter() - t0)
    for i in range(200):  # enrol then identify: the view has to catch up each time
        g.add("m", "1", f"new{i}", q[i:i + 1])
        t0 = time.perf_counter(); match(g.view("m", dim), q[i:i + 1], 1); t_mixed.append(time.perf_counter() - t0)
    g.close()
p = lambda a, k: round(1000 * float(np.percentile(a, k)), 3)
print(json.dumps({"code": sys.argv[2], "entries": n, "enrol_p50_ms": p(t_add, 50), "enrol_p99_ms": p(t_add, 99),
                  "identify_p50_ms": p(t_id, 50), "identify_p99_ms": p(t_id, 99),
                  "identify_after_enrol_p50_ms": p(t_mixed, 50), "identify_after_enrol_p99_ms": p(t_mixed, 99)}))
