"""The SQLite gallery store: transactions, persistence, caching, concurrency, matching."""
from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from photoveil.errors import InvalidInput
from photoveil.server.gallery import GalleryStore, SQLiteGallery, match


@pytest.fixture
def gallery(tmp_path):
    g = SQLiteGallery(tmp_path / "g.sqlite3")
    yield g
    g.close()


def vecs(n, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_is_a_gallery_store_in_wal_mode(gallery, tmp_path):
    assert isinstance(gallery, GalleryStore)
    db = sqlite3.connect(tmp_path / "g.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_add_view_count_delete(gallery):
    a, b = vecs(3, seed=1), vecs(2, seed=2)
    ids_a = gallery.add("m", "v1", "alice", a)
    ids_b = gallery.add("m", "v1", "bob", b)
    assert ids_a == [1, 2, 3] and ids_b == [4, 5]
    gallery.add("other", "v1", "alice", vecs(1, d=4))
    assert gallery.count("m") == 5 and gallery.count("m", "alice") == 3 and gallery.count("other") == 1
    view = gallery.view("m", 8)
    assert view.identities == ["alice"] * 3 + ["bob"] * 2
    assert np.allclose(np.linalg.norm(view.vectors, axis=1), 1.0)
    assert len(gallery.view("m", 4)) == 0  # other dimensions are not mixed in
    assert gallery.delete("m", "alice") == 3
    assert gallery.view("m", 8).identities == ["bob", "bob"]
    assert gallery.delete("m", "alice") == 0


@pytest.mark.parametrize("identity", ["", "x" * 129, "bad\nname", "tab\t"])
def test_identity_validation(gallery, identity):
    with pytest.raises(InvalidInput, match="printable"):
        gallery.add("m", "v", identity, vecs(1))


def test_bad_vectors_roll_back_nothing_written(gallery):
    bad = vecs(3)
    bad[2, 0] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        gallery.add("m", "v", "alice", bad)
    with pytest.raises(InvalidInput, match=r"\[n, d\]"):
        gallery.add("m", "v", "alice", np.zeros((0, 8)))
    assert gallery.count("m") == 0


def test_add_is_all_or_nothing(gallery):
    gallery.add("m", "v", "alice", vecs(1))

    class FailingSecondInsert:  # the connection fails on the 2nd row of one add()
        def __init__(self, db):
            self.db, self.inserts = db, 0

        def execute(self, sql, *args):
            if sql.startswith("INSERT"):
                self.inserts += 1
                if self.inserts == 2:
                    raise sqlite3.OperationalError("disk I/O error (simulated)")
            return self.db.execute(sql, *args)

    real = gallery._db
    gallery._db = FailingSecondInsert(real)
    try:
        with pytest.raises(sqlite3.OperationalError):
            gallery.add("m", "v", "bob", vecs(3))
    finally:
        gallery._db = real
    assert gallery.count("m") == 1 and gallery.count("m", "bob") == 0


def test_persists_and_sees_other_connections(tmp_path):
    path = tmp_path / "shared.sqlite3"
    one, two = SQLiteGallery(path), SQLiteGallery(path)
    try:
        one.add("m", "v", "alice", vecs(2))
        assert len(two.view("m", 8)) == 2
        two.add("m", "v", "bob", vecs(1, seed=3))  # one's cached matrix must notice (data_version)
        assert one.view("m", 8).identities == ["alice", "alice", "bob"]
    finally:
        one.close(), two.close()
    reopened = SQLiteGallery(path)
    assert reopened.count("m") == 3 and reopened.integrity_check() == "ok"
    reopened.close()


def test_concurrent_adds_from_many_threads(gallery):
    ids: list[int] = []
    lock = threading.Lock()

    def worker(k):
        for i in range(10):
            got = gallery.add("m", "v", f"id{k}", vecs(1, seed=k * 100 + i))
            with lock:
                ids.extend(got)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == list(range(1, 81)) and gallery.count("m") == 80


def test_closed_gallery_refuses(tmp_path):
    g = SQLiteGallery(tmp_path / "c.sqlite3")
    g.close()
    g.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        g.count("m")


def test_match_equals_brute_force():
    rng = np.random.default_rng(5)
    g = SQLiteGallery(":memory:")
    names = ["c", "a", "b", "a", "c", "c"]
    store = rng.normal(size=(6, 16)).astype(np.float32)
    for name, v in zip(names, store):
        g.add("m", "v", name, v[None])
    queries = rng.normal(size=(4, 16)).astype(np.float32)
    got = match(g.view("m", 16), queries, top_k=2)
    unit = store / np.linalg.norm(store, axis=1, keepdims=True)
    for q, row in zip(queries, got):
        sims = unit @ (q / np.linalg.norm(q))
        best = {n: max(s for m, s in zip(names, sims) if m == n) for n in set(names)}
        want = sorted(best.items(), key=lambda kv: -kv[1])[:2]
        assert [n for n, _ in row] == [n for n, _ in want]
        assert np.allclose([s for _, s in row], [s for _, s in want], atol=1e-5)
    assert match(g.view("none", 16), queries, 3) == [[], [], [], []]
    g.close()
