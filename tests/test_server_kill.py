"""`photoveil serve` as a real process: kill -9 during enrolment loses no acknowledged record;
SIGTERM shuts down cleanly."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import grpc
import pytest
import torch

from photoveil import wire
from photoveil.server.health import wait_serving
from photoveil.v1 import recognition_pb2 as pb, recognition_pb2_grpc
from photoveil.v1.tensor_pb2 import Input


def start_server(config_path, log_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "photoveil.server.cli", "serve", "--config", str(config_path)],
                            stdout=subprocess.PIPE, stderr=open(log_path, "ab"), env=env, text=True)
    line = [None]
    reader = threading.Thread(target=lambda: line.__setitem__(0, proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    if not line[0] or not line[0].startswith("serving on port "):
        proc.kill()
        pytest.fail(f"server did not start: {line[0]!r}\n{open(log_path).read()[-3000:]}")
    target = f"127.0.0.1:{int(line[0].split()[-1])}"
    wait_serving(target)
    return proc, target


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "server.json"
    path.write_text(json.dumps({
        "bind": "127.0.0.1:0", "gallery_path": "gallery.sqlite3", "grace_s": 5, "torch_threads": 1,
        "models": [{"id": "tiny-embed", "source": "tiny"}],
        "batching": {"max_batch_size": 16, "max_wait_ms": 2},
    }))
    return path


def test_kill_9_during_enrolment_loses_no_acknowledged_record(config, tmp_path):
    proc, target = start_server(config, tmp_path / "server.log")
    acked: dict[int, str] = {}
    lock, stop = threading.Lock(), threading.Event()
    image = Input(tensor=wire.torch_to_proto(torch.rand(1, 3, 32, 32)))

    def enrol(worker):
        channel = grpc.insecure_channel(target)
        stub = recognition_pb2_grpc.RecognitionServiceStub(channel)
        i = 0
        while not stop.is_set():
            identity = f"w{worker}-{i}"
            try:
                reply = stub.Enroll(pb.EnrollRequest(model_id="tiny-embed", identity=identity, input=image), timeout=5)
            except grpc.RpcError:
                break  # the server is gone
            with lock:
                acked.update({rid: identity for rid in reply.record_ids})
            i += 1
        channel.close()

    threads = [threading.Thread(target=enrol, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-stream: enrolments are in flight right now
    proc.wait(10)
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) >= 150, f"only {len(acked)} enrolments acknowledged before the kill"

    db = sqlite3.connect(tmp_path / "gallery.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = dict(db.execute("SELECT id, identity FROM embeddings").fetchall())
    db.close()
    lost = {rid: who for rid, who in acked.items() if stored.get(rid) != who}
    assert not lost, f"{len(lost)} acknowledged records lost"

    # The server comes back on the same file, still knows them, and SIGTERM stops it cleanly.
    proc, target = start_server(config, tmp_path / "server.log")
    try:
        stub = recognition_pb2_grpc.RecognitionServiceStub(grpc.insecure_channel(target))
        some = next(iter(acked.values()))
        verdict = stub.Verify(pb.VerifyRequest(model_id="tiny-embed", identity=some, input=image), timeout=10)
        assert verdict.verdicts[0].match
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    wal = tmp_path / "gallery.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # gallery closed: WAL checkpointed
    assert "shutting down: NOT_SERVING" in (tmp_path / "server.log").read_text()
