"""`photoveil serve` replicas sharing one PostgreSQL gallery: an enrolment through one is
identified through the other; kill -9 of a replica (or of the only server) mid-load loses no
acknowledged enrolment, and the round-robin client's retries land on the survivor."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from photoveil.client.transport import RecognitionClient, RetryPolicy, RpcFailed, channel_target
from photoveil.errors import InvalidInput
from photoveil.loadtest import ServeProcess, run_replica_kill

MODEL = "tiny-embed"


def config(dsn: str) -> dict:
    return {"bind": "127.0.0.1:0", "gallery_url": dsn, "grace_s": 5, "torch_threads": 1,
            "models": [{"id": MODEL, "source": "tiny"}], "batching": {"max_batch_size": 16, "max_wait_ms": 2}}


def faces(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_channel_target():
    assert channel_target("127.0.0.1:5") == "127.0.0.1:5"
    assert channel_target(["127.0.0.1:5", "127.0.0.2:6"]) == "ipv4:127.0.0.1:5,127.0.0.2:6"
    assert channel_target("[::1]:5,[::1]:6") == "ipv6:[::1]:5,[::1]:6"
    for bad, message in ((["db:5", "127.0.0.1:6"], "must be IP:PORT"), (["127.0.0.1:5", "[::1]:6"], "mix"),
                         ("", "HOST:PORT"), (["127.0.0.1:0", "127.0.0.1:99999"], "must be IP:PORT")):
        with pytest.raises(InvalidInput, match=message):
            channel_target(bad)


def test_enrol_through_one_replica_identify_through_the_other(postgres_dsn, tmp_path):
    a, b = (ServeProcess(config(postgres_dsn), tmp_path, f"replica-{i}") for i in range(2))
    try:
        x = faces(2)
        with RecognitionClient(a.target, timeout_s=20) as via_a, RecognitionClient(b.target, timeout_s=20) as via_b:
            via_a.enroll(MODEL, "ada", x[:1])
            via_b.enroll(MODEL, "bo", x[1:])
            assert [r.candidates[0].label for r in via_b.identify(MODEL, x, top_k=1).results] == ["ada", "bo"]
            assert via_a.verify(MODEL, "bo", x[1:]).verdicts[0].match
            assert via_b.delete_identity(MODEL, "ada") == 1
            assert [c.label for c in via_a.identify(MODEL, x[:1], top_k=2).results[0].candidates] == ["bo"]
        with RecognitionClient([a.target, b.target], timeout_s=20) as both:  # round robin over the two
            assert all(both.identify(MODEL, x[1:], top_k=1).results[0].candidates[0].label == "bo" for _ in range(6))
    finally:
        a.stop(), b.stop()


def test_replica_killed_mid_load_loses_nothing(postgres_dsn):
    (record,) = run_replica_kill(postgres_dsn, replicas=2, clients=8, seconds=6.0, kill_after_s=2.5,
                                 log=lambda *_: None)
    assert record["before_kill"] >= 20, record
    assert record["after_kill"] >= 20, record  # the survivor took the load
    assert record["errors"] == 0 and record["lost"] == 0, record


@pytest.mark.slow  # ~30 s; the default suite's replica-kill test checks the same durability
def test_kill_9_of_the_only_server_loses_no_acknowledged_record(postgres_dsn, tmp_path):
    from photoveil.server.gallery_pg import PostgresGallery

    server = ServeProcess(config(postgres_dsn), tmp_path, "only")
    acked: dict[int, str] = {}
    lock, stop = threading.Lock(), threading.Event()
    x = faces(1)

    def enrol(worker: int) -> None:
        with RecognitionClient(server.target, timeout_s=5, retry=RetryPolicy(retries=0)) as c:
            i = 0
            while not stop.is_set():
                try:
                    reply = c.enroll(MODEL, f"w{worker}-{i}", x)
                except RpcFailed:
                    return  # the server is gone
                with lock:
                    acked.update({rid: f"w{worker}-{i}" for rid in reply.record_ids})
                i += 1

    threads = [threading.Thread(target=enrol, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()  # enrolments are in flight right now
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) >= 150, f"only {len(acked)} enrolments acknowledged before the kill"
    store = PostgresGallery(postgres_dsn, pool_size=1)
    stored = store.record_identities()
    store.close()
    lost = {rid: who for rid, who in acked.items() if stored.get(rid) != who}
    assert not lost, f"{len(lost)} acknowledged records lost"
    server = ServeProcess(config(postgres_dsn), tmp_path, "only")  # back on the same database
    try:
        with RecognitionClient(server.target, timeout_s=20) as c:
            assert c.verify(MODEL, next(iter(acked.values())), x).verdicts[0].match
    finally:
        server.stop()
