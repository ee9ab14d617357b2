"""The provider under abuse (issue 18), each over a real loopback server: decompression
bombs stay within a memory bound, aborted streams leave no thread behind, SIGTERM after
stream abuse exits within drain + grace, rate limits follow the principal, health is
exempt from limits, broken artifacts stay isolated, undecodable messages are
INVALID_ARGUMENT, and a small call is not stuck behind big streams."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from photoveil import wire
from photoveil.server.config import AuthConfig, LimitsConfig
from photoveil.server.health import wait_serving
from photoveil.server.model_host import ModelKind
from photoveil.server.testing import local_server
from photoveil.server.tiny_models import tiny_host
from photoveil.v1 import artifacts_pb2, artifacts_pb2_grpc, recognition_pb2 as pb, recognition_pb2_grpc
from photoveil.v1.tensor_pb2 import Input

torch.set_num_threads(1)
Code = grpc.StatusCode
REPO = Path(__file__).resolve().parent.parent
STREAM = "/photoveil.v1.RecognitionService/RecognizeStream"
GARBAGE = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, length far past the end: not a RecognizeRequest


def tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def item(i: int, model: str = "tiny-cls") -> pb.RecognizeRequest:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(i))
    return pb.RecognizeRequest(model_id=model, input=Input(tensor=wire.torch_to_proto(x)), request_id=f"r{i}")


def raw_stream(channel: grpc.Channel):
    """RecognizeStream taking already-serialized bytes, so a test can send garbage mid-stream."""
    return channel.stream_stream(STREAM, request_serializer=lambda b: b,
                                 response_deserializer=pb.RecognizeResponse.FromString)


def slow_host(delay: float = 0.05):
    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(delay)
            return x.flatten(1)[:, :10]

    host = tiny_host()
    host.register("slow", Slow(), kind=ModelKind.CLASSIFICATION, input_size=32)
    return host


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "recognize-stream-reader"]


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def start_serve(tmp_path: Path, config: dict) -> tuple[subprocess.Popen, str]:
    """``photoveil serve`` in a child process (cwd outside the checkout), ready to call."""
    path = tmp_path / "server.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "photoveil.server.cli", "serve", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "server.log", "ab"), env=env,
                            text=True, cwd=tmp_path)
    line = [""]
    reader = threading.Thread(target=lambda: line.__setitem__(0, proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    if not line[0].startswith("serving on port "):
        proc.kill()
        pytest.fail(f"server did not start: {line[0]!r}\n{(tmp_path / 'server.log').read_text()[-3000:]}")
    target = f"127.0.0.1:{int(line[0].split()[-1])}"
    wait_serving(target)
    return proc, target


# -- 1. bounded decode memory -----------------------------------------------------------------

def test_concurrent_decompression_bombs_stay_within_a_peak_rss_bound():
    """4 concurrent 6000x6000 zero PNGs (105 KB each, decoded: the limit is raised to 40 MP).
    Before the fix the server's peak RSS grew by ~2.4 GB; the bound asserted is 600 MB."""
    record = tool("bomb_rss").measure(bombs=4, side=6000, max_image_pixels=40_000_000)
    assert record["codes"] == ["OK"] * 4, record
    assert record["peak_increase_mb"] < 600, record
    assert record["held_after_mb"] < 150, record  # decoded images are handed back afterwards
    assert record["exit_code"] == 0


def test_default_pixel_limit_refuses_a_36_mp_bomb_from_its_header():
    bomb = tool("bomb_rss").zero_png(6000)
    with local_server() as (_, target):
        stub = recognition_pb2_grpc.RecognitionServiceStub(grpc.insecure_channel(target))
        t0 = time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            stub.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=Input(encoded_image=bomb)), timeout=10)
        assert info.value.code() == Code.RESOURCE_EXHAUSTED and "16000000" in info.value.details()
        assert time.perf_counter() - t0 < 2.0  # refused from the header, nothing decoded


def test_large_images_are_reduced_early_like_the_full_size_resize():
    """The early 8-bit reduction gives what a full-size float decode + antialiased resize gave."""
    big = wire.resize(torch.rand(1, 3, 40, 30, generator=torch.Generator().manual_seed(5)), (1200, 900))[0]
    for fmt in ("PNG", "JPEG"):
        data = wire.encode_image(big, fmt)
        full = wire.resize(wire.decode_image(data)[None], (32, 32))[0]
        early = wire.decode_image(data, size=(32, 32))
        assert early.shape == (3, 32, 32) and (early - full).abs().mean() < 0.01, fmt
    with local_server() as (_, target):
        stub = recognition_pb2_grpc.RecognitionServiceStub(grpc.insecure_channel(target))
        reply = stub.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=Input(encoded_image=data)))
        assert len(reply.results) == 1


# -- 2. streams end with their call; SIGTERM always finishes ----------------------------------------

def test_aborted_streams_leave_no_reader_thread_behind():
    """Garbage mid-stream, client cancel and deadline, each with a full window queued."""
    with local_server(host=slow_host()) as (_, target):
        channel = grpc.insecure_channel(target)
        call = raw_stream(channel)
        baseline = len(reader_threads())
        many = [item(i, "slow").SerializeToString() for i in range(150)]

        with pytest.raises(grpc.RpcError) as garbage:  # garbage after 150 items
            list(call(iter(many + [GARBAGE] + many)))

        cancelled = call(iter(many * 2))  # cancel without reading
        time.sleep(0.5)
        cancelled.cancel()

        with pytest.raises(grpc.RpcError) as info:  # deadline
            list(call(iter(many * 2), timeout=0.5))
        assert info.value.code() == Code.DEADLINE_EXCEEDED

        assert wait_until(lambda: len(reader_threads()) <= baseline, 5.0), \
            f"{len(reader_threads()) - baseline} stream reader threads outlived their calls"
        assert garbage.value.code() == Code.INVALID_ARGUMENT and "does not decode" in garbage.value.details()
        stub = recognition_pb2_grpc.RecognitionServiceStub(channel)
        assert stub.Recognize(item(0), timeout=10).results  # still serving
        channel.close()


def hammer_streams(target: str, seconds: float, stop: threading.Event) -> dict[str, int]:
    """Streams of every kind against ``target``: complete, garbage mid-stream, cancelled, past deadline."""
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    payload = [item(i).SerializeToString() for i in range(64)]

    def count(key):
        with lock:
            outcomes[key] = outcomes.get(key, 0) + 1

    def worker(kind: str):
        channel = grpc.insecure_channel(target)
        call = raw_stream(channel)
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stop.is_set():
            try:
                if kind == "complete":
                    assert len(list(call(iter(payload), timeout=30))) == len(payload)
                elif kind == "garbage":
                    list(call(iter(payload + [GARBAGE] + payload * 3), timeout=30))
                elif kind == "cancel":
                    c = call(iter(payload * 4))
                    time.sleep(0.05)
                    c.cancel()
                else:
                    list(call(iter(payload * 20), timeout=0.3))
                count(f"{kind}:ok")
            except grpc.RpcError as exc:
                count(f"{kind}:{exc.code().name}")
        channel.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True)
               for k in ("complete", "garbage", "cancel", "deadline", "garbage", "cancel")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 40)
    return outcomes


def test_sigterm_after_stream_abuse_exits_0_within_drain_plus_grace(tmp_path):
    grace, drain = 2.0, 0.5
    proc, target = start_serve(tmp_path, {
        "bind": "127.0.0.1:0", "gallery_path": "gallery.sqlite3", "grace_s": grace, "drain_s": drain,
        "torch_threads": 1, "models": [{"id": "tiny-cls", "source": "tiny"}]})
    try:
        outcomes = hammer_streams(target, 3.0, threading.Event())
        # Streams still open when the signal arrives: the grace period must cut them off.
        stop = threading.Event()
        live = threading.Thread(target=hammer_streams, args=(target, 30.0, stop), daemon=True)
        live.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(drain + grace + 15)
        took = time.monotonic() - t0
        stop.set()
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "server.log").read_text()
    assert code == 0, log[-3000:]
    assert took < drain + grace + 6.0, f"exit took {took:.1f} s"  # 3 s margin for gRPC + 3 s for the rest
    assert "stopped" in log
    assert outcomes.get("garbage:INVALID_ARGUMENT", 0) >= 1 and outcomes.get("complete:ok", 0) >= 1, outcomes
    wal = tmp_path / "gallery.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # gallery closed and checkpointed


# -- 3. rate limit on the principal; failed auth throttled; health exempt -------------------------------

def _outcome(fn, *args, **kwargs) -> Code:
    try:
        fn(*args, **kwargs)
        return Code.OK
    except grpc.RpcError as exc:
        return exc.code()


def test_rate_limit_follows_the_authenticated_token_not_its_spelling(monkeypatch):
    monkeypatch.setenv("PV18_TOKENS", "tok-one")
    limits = LimitsConfig(rate_per_s=0.01, burst=5)
    with local_server(auth=AuthConfig(token_env="PV18_TOKENS"), limits=limits) as (_, target):
        stub = recognition_pb2_grpc.RecognitionServiceStub(grpc.insecure_channel(target))
        spellings = ["Bearer tok-one", "bearer tok-one", "BEARER tok-one", "Bearer  tok-one", " Bearer tok-one",
                     "bEaReR tok-one ", "Bearer tok-one  ", "BeArEr   tok-one"]
        passed = sum(_outcome(stub.ListModels, pb.ListModelsRequest(), metadata=[("authorization", s)]) == Code.OK
                     for s in spellings for _ in range(10))
        assert passed == 5, f"{passed} of 80 calls passed; one token, burst 5"


def test_rate_limit_with_auth_off_is_per_peer_and_per_stream_item():
    limits = LimitsConfig(rate_per_s=0.01, burst=10)
    with local_server(limits=limits) as (_, target):
        channel = grpc.insecure_channel(target)
        stub = recognition_pb2_grpc.RecognitionServiceStub(channel)
        replies = []
        with pytest.raises(grpc.RpcError) as info:
            for reply in stub.RecognizeStream(iter([item(i) for i in range(300)]), timeout=30):
                replies.append(reply)
        assert info.value.code() == Code.RESOURCE_EXHAUSTED and "rate limit" in info.value.details()
        assert len(replies) <= 10, f"{len(replies)} of 300 stream items answered with a burst of 10"
        made_up = [_outcome(stub.ListModels, pb.ListModelsRequest(), metadata=[("authorization", f"Bearer x{i}")])
                   for i in range(20)]
        assert made_up.count(Code.OK) == 0, "random header values bought fresh buckets"
        health = health_pb2_grpc.HealthStub(channel)  # never charged
        assert all(health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
                   for _ in range(30))
        channel.close()


def test_failed_authentications_are_throttled_per_peer(monkeypatch):
    monkeypatch.setenv("PV18_TOKENS", "right")
    limits = LimitsConfig(auth_failures_per_s=0.01, auth_failure_burst=5)
    with local_server(auth=AuthConfig(token_env="PV18_TOKENS"), limits=limits) as (_, target):
        stub = recognition_pb2_grpc.RecognitionServiceStub(grpc.insecure_channel(target))
        guesses = [_outcome(stub.ListModels, pb.ListModelsRequest(), metadata=[("authorization", f"Bearer g{i}")])
                   for i in range(200)]
        assert guesses[:5] == [Code.UNAUTHENTICATED] * 5
        assert set(guesses[5:]) == {Code.RESOURCE_EXHAUSTED}, "guessing was not throttled"
        # the throttled address learns nothing, even with the right token, until it refills
        assert _outcome(stub.ListModels, pb.ListModelsRequest(),
                        metadata=[("authorization", "Bearer right")]) == Code.RESOURCE_EXHAUSTED


def test_health_and_reflection_answer_while_calls_fill_the_concurrency_limit():
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with local_server(limits=LimitsConfig(max_concurrent_rpcs=2), workers=16) as (_, target):
        channel = grpc.insecure_channel(target)
        stub = recognition_pb2_grpc.RecognitionServiceStub(channel)
        feeds = [queue.Queue() for _ in range(4)]
        idle = [stub.RecognizeStream(iter(q.get, None)) for q in feeds]  # four idle streams
        time.sleep(0.5)
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(10):
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        listed = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        assert listed.list_services_response.service
        assert _outcome(stub.ListModels, pb.ListModelsRequest(), timeout=5) == Code.RESOURCE_EXHAUSTED
        for q in feeds:
            q.put(None)
        codes = [_outcome(list, call) for call in idle]
        assert codes.count(Code.OK) == 2 and codes.count(Code.RESOURCE_EXHAUSTED) == 2, codes
        assert wait_until(lambda: _outcome(stub.ListModels, pb.ListModelsRequest(), timeout=5) == Code.OK, 3)
        channel.close()


# -- 4. artifacts: faults isolated, chunks fit, signed means verified -----------------------------------

def _artifact(folder: Path, model_id: str = "m") -> Path:
    folder.mkdir(parents=True)
    (folder / "p.pte").write_bytes(os.urandom(300_000))
    (folder / "manifest.json").write_text(json.dumps({"model_id": model_id, "method": "pmt"}))
    return folder


def test_one_broken_artifact_folder_does_not_break_the_others(tmp_path):
    good = _artifact(tmp_path / "good")
    (good / "model.sig").write_text('{"bundle": "garbage"}')  # present, but does not verify
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    (dangling / "manifest.json").write_text(json.dumps({"model_id": "m", "method": "pmt"}))
    (dangling / "p.pte").symlink_to(tmp_path / "nowhere.pte")
    directory = tmp_path / "directory"
    (directory / "p.pte").mkdir(parents=True)
    (directory / "manifest.json").write_text(json.dumps({"model_id": "m", "method": "pmt"}))
    limits = LimitsConfig(max_message_bytes=64 << 10)  # below the default 256 KiB chunk
    with local_server(artifacts_dir=str(tmp_path), limits=limits) as (_, target):
        arts = artifacts_pb2_grpc.ArtifactServiceStub(grpc.insecure_channel(target))
        listed = arts.ListArtifacts(artifacts_pb2.ListArtifactsRequest()).artifacts
        assert [a.artifact_id for a in listed] == ["good"]
        assert not listed[0].signed  # a garbage bundle is not a signature
        for broken in ("dangling", "directory"):
            code = _outcome(list, arts.GetArtifact(artifacts_pb2.GetArtifactRequest(artifact_id=broken)))
            assert code == Code.FAILED_PRECONDITION, broken
        chunks = list(arts.GetArtifact(artifacts_pb2.GetArtifactRequest(artifact_id="good")))
        data = b"".join(c.chunk.data for c in chunks[1:] if c.chunk.name == "p.pte")
        assert data == (good / "p.pte").read_bytes()
        assert max(len(c.chunk.data) for c in chunks[1:]) <= (64 << 10) - 1024


def test_signed_means_the_signature_verifies_and_every_file_is_covered(tmp_path):
    from photoveil.errors import IntegrityError
    from photoveil.signing import keygen, sign_artifact, verify_artifact

    private, public = keygen(tmp_path / "keys" / "provider")
    root = tmp_path / "arts"
    folder = _artifact(root / "signed")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256((folder / "p.pte").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    sign_artifact(folder, private)
    with local_server(artifacts_dir=str(root), artifacts_public_key=str(public)) as (_, target):
        arts = artifacts_pb2_grpc.ArtifactServiceStub(grpc.insecure_channel(target))
        assert arts.ListArtifacts(artifacts_pb2.ListArtifactsRequest()).artifacts[0].signed
        (folder / ".gitignore").write_text("*\n")  # an added git file is an added file
        with pytest.raises(IntegrityError):
            verify_artifact(folder, public)
        assert not arts.ListArtifacts(artifacts_pb2.ListArtifactsRequest()).artifacts[0].signed


def test_hostile_file_names_from_a_server_are_integrity_errors_on_the_phone(tmp_path):
    from concurrent import futures

    from photoveil.client.phone import Phone
    from photoveil.client.transport import RecognitionClient
    from photoveil.errors import IntegrityError

    class Hostile(artifacts_pb2_grpc.ArtifactServiceServicer):
        name = ""

        def _info(self):
            return artifacts_pb2.ArtifactInfo(artifact_id="evil", files=[artifacts_pb2.ArtifactFile(
                name=self.name, role=artifacts_pb2.FILE_ROLE_PROGRAM, size=3, sha256="0" * 64)])

        def ListArtifacts(self, request, context):
            return artifacts_pb2.ListArtifactsResponse(artifacts=[self._info()])

        def GetArtifact(self, request, context):
            yield artifacts_pb2.ArtifactChunk(info=self._info())
            yield artifacts_pb2.ArtifactChunk(chunk=artifacts_pb2.FileChunk(name=self.name, data=b"abc", last=True))

    hostile = Hostile()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(hostile, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with RecognitionClient(f"127.0.0.1:{port}") as rpc:
            from photoveil.signing import keygen

            _, public = keygen(tmp_path / "provider")  # the names are refused before any signature check
            phone = Phone(rpc, public_key=public, workdir=tmp_path / "phone")
            for name in ("", ".", "..", "/etc/passwd", "a/b", "..\\x", "x\0y"):
                hostile.name = name
                with pytest.raises(IntegrityError, match="plain name"):
                    phone.install("evil")
        assert not (tmp_path / "passwd").exists() and not list((tmp_path / "phone").glob("evil*"))
    finally:
        server.stop(0)


# -- 6. undecodable messages -----------------------------------------------------------------------

def test_undecodable_request_messages_are_invalid_argument():
    with local_server() as (_, target):
        channel = grpc.insecure_channel(target)
        for method in ("/photoveil.v1.RecognitionService/Recognize", "/photoveil.v1.RecognitionService/Enroll",
                       "/photoveil.v1.ArtifactService/ListArtifacts"):
            call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            with pytest.raises(grpc.RpcError) as info:
                call(GARBAGE, timeout=5)
            assert info.value.code() == Code.INVALID_ARGUMENT, (method, info.value.details())
        get = channel.unary_stream("/photoveil.v1.ArtifactService/GetArtifact", request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        assert _outcome(list, get(GARBAGE, timeout=5)) == Code.INVALID_ARGUMENT
        stub = recognition_pb2_grpc.RecognitionServiceStub(channel)
        assert stub.Recognize(item(1), timeout=5).results
        channel.close()


# -- 5. fairness between streams -----------------------------------------------------------------

def test_a_small_stream_is_not_stuck_behind_two_large_streams():
    """Two 600-item streams keep their windows full (a forward pass: 0.1 s per batch of 8);
    a one-item stream sent meanwhile is answered within a few batches, not after their
    backlog (~16 batches, 1.6 s, before round-robin)."""
    from photoveil.server.config import BatchingConfig

    with local_server(host=slow_host(0.1), batching=BatchingConfig(max_batch_size=8, max_wait_ms=2)) as (_, target):
        channel = grpc.insecure_channel(target)
        stub = recognition_pb2_grpc.RecognitionServiceStub(channel)
        big = [item(i, "slow") for i in range(600)]

        def large_stream():
            try:
                list(stub.RecognizeStream(iter(big), timeout=60))
            except grpc.RpcError:
                pass  # cut off when the test closes the channel

        bigs = [threading.Thread(target=large_stream, daemon=True) for _ in range(2)]
        for t in bigs:
            t.start()
        time.sleep(1.0)  # both windows are full now
        latencies = []
        for i in range(3):
            t0 = time.perf_counter()
            replies = list(stub.RecognizeStream(iter([item(1000 + i, "slow")]), timeout=30))
            latencies.append(time.perf_counter() - t0)
            assert len(replies) == 1 and replies[0].results
        assert max(bigs, key=lambda t: t.is_alive()).is_alive(), "the large streams ended before the probe"
        assert sorted(latencies)[1] < 0.8, f"small stream latencies {latencies} behind two large streams"
        channel.close()
