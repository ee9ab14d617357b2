"""The gallery semantics every store promises, run against SQLite and a real PostgreSQL server,
plus the search index against exact search and the generation feed across processes."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from photoveil.errors import InvalidInput
from photoveil.server.config import GalleryIndexConfig, ServerConfig, config_from_dict
from photoveil.server.gallery import GalleryStore, GalleryUnavailable, SQLiteGallery, match
from photoveil.server.vector_index import GalleryView

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
def location(request, tmp_path):
    """(backend, where): a SQLite file or the DSN of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "g.sqlite3")
    return "postgres", request.getfixturevalue("postgres_dsn")


def open_store(location, **index) -> GalleryStore:
    backend, where = location
    config = GalleryIndexConfig(**index)
    if backend == "sqlite":
        return SQLiteGallery(where, index=config)
    from photoveil.server.gallery_pg import PostgresGallery

    return PostgresGallery(where, pool_size=4, index=config)


@pytest.fixture
def store(location):
    s = open_store(location)
    yield s
    s.close()


def vecs(n, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_add_view_count_delete(store):
    a, b = vecs(3, seed=1), vecs(2, seed=2)
    ids_a = store.add("m", "v1", "alice", a)
    ids_b = store.add("m", "v1", "bob", b)
    assert len(set(ids_a + ids_b)) == 5 and ids_a == sorted(ids_a) and max(ids_a) < min(ids_b)
    store.add("other", "v1", "alice", vecs(1, d=4))
    assert store.count("m") == 5 and store.count("m", "alice") == 3 and store.count("other") == 1
    view = store.view("m", 8)
    assert view.identities == ["alice"] * 3 + ["bob"] * 2 and list(view.ids) == ids_a + ids_b
    both = np.vstack([a, b])
    assert np.allclose(view.vectors, both / np.linalg.norm(both, axis=1, keepdims=True), atol=1e-6)
    assert len(store.view("m", 4)) == 0  # other dimensions are not mixed in
    assert list(view.rows_of("bob")) == [3, 4] and len(view.rows_of("nobody")) == 0
    assert store.delete("m", "alice") == 3
    assert store.view("m", 8).identities == ["bob", "bob"]
    assert store.delete("m", "alice") == 0 and store.count("m", "alice") == 0


@pytest.mark.parametrize("identity", ["", "x" * 129, "bad\nname"])
def test_identity_validation(store, identity):
    with pytest.raises(InvalidInput, match="printable"):
        store.add("m", "v", identity, vecs(1))
    with pytest.raises(InvalidInput, match="printable"):
        store.add_many("m", "v", ["ok", identity], vecs(2))
    assert store.count("m") == 0


def test_bad_vectors_write_nothing(store):
    bad = vecs(3)
    bad[2, 0] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        store.add("m", "v", "alice", bad)
    with pytest.raises(InvalidInput, match=r"\[n, d\]"):
        store.add("m", "v", "alice", np.zeros((0, 8)))
    with pytest.raises(InvalidInput, match="2 identities for 3"):
        store.add_many("m", "v", ["a", "b"], vecs(3))
    assert store.count("m") == 0


def test_add_many_is_one_write(store):
    names = [f"p{i % 7}" for i in range(50)]
    ids = store.add_many("m", "v", names, vecs(50, seed=4))
    assert len(ids) == 50 and ids == sorted(ids)
    view = store.view("m", 8)
    assert view.identities == names and store.count("m", "p3") == names.count("p3")


def test_two_stores_see_each_others_writes_incrementally(location):
    """Random adds/deletes through one store; the other's incrementally updated view equals a fresh one."""
    one, two = open_store(location), open_store(location)
    rng = np.random.default_rng(7)
    try:
        for step in range(30):
            who = f"id{rng.integers(0, 8)}"
            writer = one if step % 2 else two
            if rng.random() < 0.25:
                writer.delete("m", who)
            else:
                writer.add("m", "v", who, vecs(int(rng.integers(1, 4)), seed=step))
            if step % 5 == 0:
                one.view("m", 8), two.view("m", 8)  # keep both indexes warm: later changes arrive as deltas
        fresh = open_store(location)
        want = fresh.view("m", 8)
        for s in (one, two):
            got = s.view("m", 8)
            assert list(got.ids) == list(want.ids) and got.identities == want.identities
            assert np.allclose(got.vectors, want.vectors)
        fresh.close()
    finally:
        one.close(), two.close()


def test_closed_store_refuses(location):
    s = open_store(location)
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        s.count("m")


def clustered(n_people, per, d, seed, noise=0.35):
    """Gallery rows: ``per`` noisy shots of each of ``n_people`` random unit directions."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_people, d)).astype(np.float32)
    rows = np.repeat(centers, per, axis=0) + noise * rng.normal(size=(n_people * per, d)).astype(np.float32)
    return [f"p{i}" for i in range(n_people) for _ in range(per)], rows, centers


def brute_force(names, rows, queries, k):
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    out = []
    for q in queries:
        sims = unit @ (q / np.linalg.norm(q))
        best: dict[str, float] = {}
        for n, s in zip(names, sims):
            best[n] = max(best.get(n, -2.0), float(s))
        out.append(sorted(best.items(), key=lambda kv: -kv[1])[:k])
    return out


@pytest.mark.parametrize("kind", ["exact", "flat", "ivf", "hnsw"])
def test_index_search_equals_exact_on_a_small_gallery(kind):
    names, rows, centers = clustered(150, 5, 16, seed=3)  # 750 rows: enough to train IVF
    # IVF scans every list, HNSW keeps every node a candidate: both exact here
    g = SQLiteGallery(":memory:", index=GalleryIndexConfig(kind=kind, nprobe=65536, ef_search=1024))
    g.add_many("m", "v", names, rows)
    assert g.index("m", 16).kind == kind
    queries = centers[:40] + 0.3 * np.random.default_rng(9).normal(size=(40, 16)).astype(np.float32)
    got = match(g.view("m", 16), queries, top_k=3)
    want = brute_force(names, rows, queries, 3)
    for row_got, row_want in zip(got, want):
        assert [n for n, _ in row_got] == [n for n, _ in row_want]
        assert np.allclose([s for _, s in row_got], [s for _, s in row_want], atol=1e-5)
    g.close()


def test_ivf_with_few_probes_keeps_top1_and_follows_deletes():
    names, rows, centers = clustered(400, 3, 32, seed=5)
    g = SQLiteGallery(":memory:", index=GalleryIndexConfig(kind="auto", ivf_threshold=1000, nprobe=8))
    g.add_many("m", "v", names, rows)
    index = g.index("m", 32)
    assert index.kind == "ivf"
    queries = centers + 0.3 * np.random.default_rng(1).normal(size=centers.shape).astype(np.float32)
    exact = GalleryView(g.view("m", 32).ids, names, rows)  # no searcher: the numpy scan
    top1 = [r[0][0] for r in match(g.view("m", 32), queries, 1)]
    ref = [r[0][0] for r in match(exact, queries, 1)]
    assert np.mean([a == b for a, b in zip(top1, ref)]) >= 0.95
    assert g.delete("m", "p0") == 3
    after = match(g.view("m", 32), queries[:1], 5)[0]
    assert "p0" not in [n for n, _ in after] and g.index("m", 32).kind == "ivf"
    g.close()


def test_hnsw_hides_deleted_rows_and_rebuilds_past_a_quarter():
    names, rows, centers = clustered(300, 3, 32, seed=7)
    g = SQLiteGallery(":memory:", index=GalleryIndexConfig(kind="hnsw", ef_search=32))
    g.add_many("m", "v", names, rows)
    index = g.index("m", 32)
    assert index.kind == "hnsw"
    queries = centers + 0.3 * np.random.default_rng(2).normal(size=centers.shape).astype(np.float32)
    exact = GalleryView(g.view("m", 32).ids, names, rows)
    top1 = [r[0][0] for r in match(g.view("m", 32), queries, 1)]
    assert np.mean([a == b for a, b in zip(top1, [r[0][0] for r in match(exact, queries, 1)])]) >= 0.95
    graph = index._faiss
    for k in range(20):  # 60 of 900 rows deleted: hidden, the graph is not rebuilt
        assert g.delete("m", f"p{k}") == 3
    after = match(g.view("m", 32), queries[:20], 5)
    assert all(f"p{k}" not in [n for n, _ in row] for k, row in enumerate(after))
    assert g.index("m", 32)._faiss is graph and g.index("m", 32)._dead == 60
    for k in range(20, 90):  # 270 of 900 deleted (30 %): rebuilt without them
        g.delete("m", f"p{k}")
    index = g.index("m", 32)
    assert index._faiss is not graph and index._dead == 0 and index._faiss.ntotal == 900 - 270
    g.close()


ENROL_ELSEWHERE = textwrap.dedent("""
    import sys, numpy as np
    backend, where, name = sys.argv[1:4]
    if backend == "sqlite":
        from photoveil.server.gallery import SQLiteGallery as S
    else:
        from photoveil.server.gallery_pg import PostgresGallery as S
    s = S(where)
    print(s.add("m", "v", name, np.ones((1, 8), np.float32))[0])
    s.close()
""")


def test_another_process_enrolment_is_visible_within_the_bound(location):
    """refresh_ms=0: the next view after another process's acknowledged write sees it;
    refresh_ms=300: a cached view may lag, but never by more than 300 ms."""
    backend, where = location
    fresh, lagging = open_store(location), open_store(location, refresh_ms=300)
    try:
        assert len(fresh.view("m", 8)) == 0 and len(lagging.view("m", 8)) == 0
        out = subprocess.run([sys.executable, "-c", ENROL_ELSEWHERE, backend, where, "carol"], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        acked = time.monotonic()
        assert fresh.view("m", 8).identities == ["carol"]
        time.sleep(max(0.0, acked + 0.3 - time.monotonic()))  # any view that starts 300 ms after the ack sees it
        assert lagging.view("m", 8).identities == ["carol"]
        assert match(fresh.view("m", 8), np.ones((1, 8)), 1)[0][0][0] == "carol"
    finally:
        fresh.close(), lagging.close()


def test_sqlite_v1_file_is_migrated(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE embeddings (id INTEGER PRIMARY KEY AUTOINCREMENT, identity TEXT NOT NULL, model_id TEXT NOT NULL,
            model_version TEXT NOT NULL, dim INTEGER NOT NULL CHECK (dim > 0),
            vector BLOB NOT NULL CHECK (length(vector) = 4 * dim), created_at REAL NOT NULL);
        PRAGMA user_version=1;""")
    db.execute("INSERT INTO embeddings (identity, model_id, model_version, dim, vector, created_at) "
               "VALUES ('old', 'm', 'v', 8, ?, 0)", (np.ones(8, "<f4").tobytes(),))
    db.commit(), db.close()
    g = SQLiteGallery(path)
    assert g.view("m", 8).identities == ["old"]
    g.add("m", "v", "new", vecs(1))
    assert g.view("m", 8).identities == ["old", "new"] and g.delete("m", "old") == 1
    g.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def test_postgres_schema_is_versioned(postgres_dsn):
    import psycopg

    from photoveil.server.gallery_pg import SCHEMA_VERSION, PostgresGallery

    a, b = PostgresGallery(postgres_dsn), PostgresGallery(postgres_dsn)  # the second finds it migrated
    a.close(), b.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM photoveil_schema")] == list(range(1, SCHEMA_VERSION + 1))
        conn.execute("INSERT INTO photoveil_schema VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(InvalidInput, match=f"schema version {SCHEMA_VERSION + 1}"):
        PostgresGallery(postgres_dsn)


def test_unreachable_postgres_is_a_clear_error(tmp_path):
    pytest.importorskip("psycopg")
    from photoveil.server.gallery_pg import PostgresGallery

    with pytest.raises(GalleryUnavailable, match=r"cannot open the PostgreSQL gallery postgresql://.*nowhere"):
        PostgresGallery(f"postgresql://u:secret@/nowhere?host={tmp_path}", connect_timeout_s=1)


@pytest.mark.parametrize("data, message", [
    ({"gallery_url": "mysql://db/x"}, "must start with postgresql://"),
    ({"gallery_url": "postgresql://db/x", "gallery_path": "g.sqlite3"}, "not both"),
    ({"gallery_pool_size": 0}, "gallery_pool_size"),
    ({"gallery_index": {"kind": "annoy"}}, "accepted: auto, exact, flat, ivf, hnsw"),
    ({"gallery_index": {"ef_search": 0}}, "ef_search"),
    ({"gallery_index": {"hnsw_m": 2}}, "hnsw_m must be in 4..128"),
    ({"gallery_index": {"nprobe": 0}}, "nprobe"),
    ({"gallery_index": {"refresh": 1}}, "unknown key"),
])
def test_gallery_config_is_validated(data, message):
    with pytest.raises(InvalidInput, match=message):
        config_from_dict(data)
    assert ServerConfig().gallery_url == "" and ServerConfig().gallery_index.kind == "auto"


def test_enrol_verify_identify_delete_over_grpc(store):
    """The RPCs on a real loopback server, backed by each store."""
    import torch

    from photoveil.client.transport import RecognitionClient, RpcFailed
    from photoveil.server.app import build_server
    from photoveil.server.tiny_models import tiny_host

    server, port = build_server(ServerConfig(bind="127.0.0.1:0"), tiny_host(), gallery=store)
    server.start()
    faces = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    try:
        with RecognitionClient(f"127.0.0.1:{port}", timeout_s=20) as c:
            for i, name in enumerate(("ann", "ben", "cid")):
                reply = c.enroll("tiny-embed", name, faces[i:i + 1])
                assert reply.total_for_identity == 1 and len(reply.record_ids) == 1
            assert c.verify("tiny-embed", "ben", faces[1:2]).verdicts[0].match
            found = c.identify("tiny-embed", faces, top_k=1)
            assert [r.candidates[0].label for r in found.results] == ["ann", "ben", "cid"]
            assert c.delete_identity("tiny-embed", "ben") == 1
            assert "ben" not in [x.label for x in c.identify("tiny-embed", faces[1:2], top_k=3).results[0].candidates]
            with pytest.raises(RpcFailed, match="NOT_FOUND"):
                c.verify("tiny-embed", "ben", faces[1:2])
    finally:
        server.stop(0)


@pytest.mark.parametrize("argv, message", [
    (["gallery", "bench", "--backends", "mysql"], "accepted sqlite, postgres"),
    (["gallery", "bench", "--backends", "postgres"], "needs --gallery-url"),
    (["gallery", "bench", "--sizes", "ten"], "comma list of integers"),
    (["gallery", "bench", "--sizes", "10"], "--sizes must be integers in 100.."),
    (["gallery", "bench", "--indexes", "annoy"], "accepted exact, flat, ivf, hnsw"),
    (["gallery", "bench", "--ef-search", "0"], "--ef-search values"),
    (["gallery", "bench", "--nprobe", "0"], "--nprobe values"),
    (["loadtest", "--replicas", "2"], "needs --gallery-url"),
])
def test_bench_and_replica_commands_refuse_bad_arguments(argv, message, capsys):
    from photoveil.cli import main as cli

    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_gallery_bench_records(tmp_path, capsys):
    import json

    from photoveil.cli import main as cli

    assert cli(["gallery", "bench", "--sizes", "2000", "--dim", "16", "--queries", "50", "--nprobe", "4,64",
                "--json", "--out", str(tmp_path)]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [(r["index"], r["nprobe"] or r["ef_search"]) for r in records] == [
        ("exact", None), ("flat", None), ("ivf", 4), ("ivf", 64), ("hnsw", 64)]
    for r in records:
        assert {"backend", "index", "entries", "dim", "p50_ms", "p99_ms", "recall_at_1"} <= set(r)
        assert r["backend"] == "sqlite" and r["entries"] == 2000 and r["dim"] == 16 and 0 < r["p50_ms"] <= r["p99_ms"]
    assert records[0]["recall_at_1"] == records[1]["recall_at_1"] == 1.0  # flat is exact
    assert records[3]["recall_at_1"] >= records[2]["recall_at_1"] and records[3]["recall_at_1"] >= 0.98
    assert records[4]["recall_at_1"] >= 0.98
    assert json.loads((tmp_path / "gallery_bench.json").read_text())["records"] == records


@pytest.mark.models
def test_gallery_bench_on_real_lfw_embeddings(face_models_dir, capsys):
    import json

    from photoveil.cli import main as cli

    lfw = Path(__file__).parent / "fixtures" / "lfw_small"
    assert cli(["gallery", "bench", "--embeddings", "lfw", "--lfw", str(lfw), "--model", "mobileface",
                "--indexes", "exact,hnsw", "--queries", "10", "--json"]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [r["index"] for r in records] == ["exact", "hnsw"]
    for r in records:  # 10 identities with >= 2 images: one probe each, every other image enrolled
        assert r["data"] == "lfw-mobileface" and r["queries"] == 10 and r["dim"] == 256
        assert r["top1_accuracy"] >= 0.6 and r["recall_at_1"] == 1.0
