"""1,000 malformed requests generated with hypothesis: each gets its precise status, the server lives on.

Each case carries exactly one defect (bad header, bad image tensor, corrupt encoded image,
bad features, unknown model or split point, bad top_k or identity) and the status it must
get; ~25 s on 2 cores.
"""
from __future__ import annotations

import math

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings, strategies as st

from photoveil import wire
from photoveil.server.config import LimitsConfig
from photoveil.server.testing import local_server
from photoveil.v1 import recognition_pb2 as pb, recognition_pb2_grpc
from photoveil.v1.tensor_pb2 import Features, Input, Tensor

torch.set_num_threads(1)
C = grpc.StatusCode
MAX_BYTES = 256 << 10
MAX_ITEMS = 4
MODELS = ("tiny-cls", "tiny-embed")
SIZES = {"FP32": 4, "FP16": 2, "BF16": 2, "FP64": 8, "UINT8": 1, "INT8": 1, "INT16": 2, "INT32": 4, "INT64": 8,
         "UINT16": 2, "UINT32": 4, "UINT64": 8, "BOOL": 1}


@pytest.fixture(scope="module")
def fuzz_server():
    limits = LimitsConfig(max_message_bytes=MAX_BYTES, max_batch_items=MAX_ITEMS)
    with local_server(limits=limits) as (srv, target):
        channel = grpc.insecure_channel(target)
        stub = recognition_pb2_grpc.RecognitionServiceStub(channel)
        stub.Enroll(pb.EnrollRequest(model_id="tiny-embed", identity="alice",
                                     input=Input(tensor=wire.torch_to_proto(torch.rand(1, 3, 32, 32)))))
        yield srv, channel, stub
        channel.close()


# -- defect generators: each returns (Input, expected status) -------------------------------------

def _rand(draw, *shape):
    seed = draw(st.integers(0, 2**16))
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _raw(n):
    return st.binary(min_size=n, max_size=n)


@st.composite
def bad_header(draw):
    """Unknown datatype, negative dims, over-rank, byte-count mismatch or an oversize claim."""
    kind = draw(st.sampled_from(["datatype", "negative", "rank", "count", "huge"]))
    if kind == "datatype":
        dt = draw(st.text(max_size=6).filter(lambda s: s not in SIZES))
        return Tensor(datatype=dt, shape=[1, 3, 32, 32], raw_contents=b"\0" * 12288), C.INVALID_ARGUMENT
    dt = draw(st.sampled_from(sorted(SIZES)))
    if kind == "negative":
        shape = draw(st.lists(st.integers(-5, 40), min_size=1, max_size=4).filter(lambda s: min(s) < 0))
        return Tensor(datatype=dt, shape=shape, raw_contents=draw(st.binary(max_size=64))), C.INVALID_ARGUMENT
    if kind == "rank":
        shape = draw(st.lists(st.integers(1, 2), min_size=9, max_size=12))
        return Tensor(datatype=dt, shape=shape, raw_contents=b""), C.INVALID_ARGUMENT
    if kind == "huge":
        shape = draw(st.lists(st.integers(1000, 10**6), min_size=2, max_size=4))
        return Tensor(datatype=dt, shape=shape, raw_contents=draw(st.binary(max_size=64))), C.RESOURCE_EXHAUSTED
    shape = draw(st.lists(st.integers(0, 12), min_size=1, max_size=4))
    need = math.prod(shape) * SIZES[dt]
    n = draw(st.integers(0, 2 * need + 8).filter(lambda n: n != need))
    return Tensor(datatype=dt, shape=shape, raw_contents=draw(_raw(n))), C.INVALID_ARGUMENT


@st.composite
def bad_image_tensor(draw):
    """Well-formed tensors that are not acceptable images."""
    kind = draw(st.sampled_from(["shape", "dtype", "nonfinite", "range", "items"]))
    if kind == "shape":
        shape = draw(st.lists(st.integers(1, 40), min_size=1, max_size=5).filter(
            lambda s: tuple(s[-3:]) != (3, 32, 32) or len(s) not in (3, 4)))
        return wire.torch_to_proto(_rand(draw, shape) if math.prod(shape) < 60000 else _rand(draw, 1, 3, 8, 8)), \
            C.INVALID_ARGUMENT
    if kind == "dtype":
        dtype = draw(st.sampled_from([torch.int8, torch.int16, torch.int32, torch.int64, torch.bool]))
        return wire.torch_to_proto(torch.zeros(1, 3, 32, 32, dtype=dtype)), C.INVALID_ARGUMENT
    if kind == "nonfinite":
        x = _rand(draw, draw(st.integers(1, MAX_ITEMS)), 3, 32, 32)
        idx = tuple(draw(st.integers(0, d - 1)) for d in x.shape)
        x[idx] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
        dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.float64]))
        return wire.torch_to_proto(x.to(dtype)), C.INVALID_ARGUMENT
    if kind == "range":
        x = _rand(draw, 1, 3, 32, 32)
        x[0, 0, 0, 0] = draw(st.one_of(st.floats(1.01, 1e6), st.floats(-1e6, -0.01)))
        return wire.torch_to_proto(x), C.INVALID_ARGUMENT
    n = draw(st.integers(MAX_ITEMS + 1, 2 * MAX_ITEMS))
    return wire.torch_to_proto(torch.zeros(n, 3, 32, 32, dtype=torch.uint8)), C.RESOURCE_EXHAUSTED


@st.composite
def bad_encoded(draw):
    magic = draw(st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF"]))
    if draw(st.booleans()):
        good = wire.encode_image(_rand(draw, 3, 20, 20), draw(st.sampled_from(["PNG", "JPEG"])))
        cut = draw(st.integers(0, len(good) - 30))
        return good[:cut], C.INVALID_ARGUMENT  # truncated
    body = draw(st.binary(max_size=200))
    return magic + body, C.INVALID_ARGUMENT


@st.composite
def bad_features(draw):
    kind = draw(st.sampled_from(["point", "shape", "dtype", "nonfinite"]))
    if kind == "point":
        point = draw(st.text(max_size=10).filter(lambda s: s != "block1"))
        return Features(split_point=point, tensor=wire.torch_to_proto(_rand(draw, 1, 8, 16, 16))), C.NOT_FOUND
    if kind == "shape":
        shape = draw(st.lists(st.integers(1, 20), min_size=1, max_size=4).filter(
            lambda s: tuple(s) != (8, 16, 16) and tuple(s[1:]) != (8, 16, 16)))
        return Features(split_point="block1", tensor=wire.torch_to_proto(_rand(draw, shape))), C.INVALID_ARGUMENT
    if kind == "dtype":
        dtype = draw(st.sampled_from([torch.uint8, torch.int32, torch.int64]))
        return Features(split_point="block1", tensor=wire.torch_to_proto(torch.zeros(1, 8, 16, 16, dtype=dtype))), \
            C.INVALID_ARGUMENT
    x = _rand(draw, 1, 8, 16, 16)
    x[0, draw(st.integers(0, 7)), 3, 3] = float("nan")
    return Features(split_point="block1", tensor=wire.torch_to_proto(x)), C.INVALID_ARGUMENT


FLOATS = ("FP32", "FP16", "BF16", "FP64")


def _as_features_code(t, code):
    """Features must be floating point: that check comes before the tensor is decoded."""
    return code if t.datatype in FLOATS or t.datatype not in SIZES else C.INVALID_ARGUMENT


@st.composite
def bad_input(draw):
    which = draw(st.sampled_from(["header", "image", "encoded", "features", "empty"]))
    if which == "header":
        t, code = draw(bad_header())
        if draw(st.booleans()):
            return Input(features=Features(split_point="block1", tensor=t)), _as_features_code(t, code)
        return Input(tensor=t), code
    if which == "image":
        t, code = draw(bad_image_tensor())
        return Input(tensor=t), code
    if which == "encoded":
        data, code = draw(bad_encoded())
        return Input(encoded_image=data), code
    if which == "features":
        f, code = draw(bad_features())
        return Input(features=f), code
    return Input(), C.INVALID_ARGUMENT


@st.composite
def bad_feature_tensor(draw):
    """(split point, features tensor or None, code) for RecognizeFeatures."""
    which = draw(st.sampled_from(["header", "features", "missing"]))
    if which == "header":
        t, code = draw(bad_header())
        return "block1", t, _as_features_code(t, code)
    if which == "features":
        f, code = draw(bad_features())
        return f.split_point, f.tensor, code
    return "block1", None, C.INVALID_ARGUMENT


GOOD = Input(tensor=wire.torch_to_proto(torch.rand(1, 3, 32, 32)))
GOOD_FEATURES = wire.torch_to_proto(torch.rand(1, 8, 16, 16))
DEFECTS = {"Recognize": ("input", "model", "top_k"), "Identify": ("input", "model", "top_k"),
           "RecognizeFeatures": ("input", "model", "top_k"), "Enroll": ("input", "model", "identity"),
           "Verify": ("input", "model", "identity")}


@st.composite
def malformed(draw):
    """(rpc name, request, expected code) with exactly one defect."""
    rpc = draw(st.sampled_from(sorted(DEFECTS)))
    defect = draw(st.sampled_from(DEFECTS[rpc] + ("input",)))  # inputs twice as often
    model = "tiny-embed" if rpc in ("Enroll", "Verify", "Identify") else draw(st.sampled_from(MODELS))
    code = {"model": C.NOT_FOUND, "top_k": C.INVALID_ARGUMENT, "identity": C.INVALID_ARGUMENT}.get(defect)
    if defect == "model":
        model = draw(st.text(max_size=20).filter(lambda s: s not in MODELS))
    top_k = draw(st.integers(1001, 2**32 - 1)) if defect == "top_k" else 0
    identity = "alice"
    if defect == "identity":
        identity = draw(st.one_of(st.just(""), st.text(min_size=129, max_size=140),
                                  st.text(min_size=1, max_size=5).map(lambda s: s + "\n")))
    if rpc == "RecognizeFeatures":
        point, features = "block1", GOOD_FEATURES
        if defect == "input":
            point, features, code = draw(bad_feature_tensor())
        return rpc, pb.RecognizeFeaturesRequest(model_id=model, split_point=point, features=features,
                                                top_k=top_k), code
    inp = GOOD
    if defect == "input":
        inp, code = draw(bad_input())
    if rpc == "Recognize":
        return rpc, pb.RecognizeRequest(model_id=model, input=inp, top_k=top_k), code
    if rpc == "Identify":
        return rpc, pb.IdentifyRequest(model_id=model, input=inp, top_k=top_k), code
    if rpc == "Enroll":
        return rpc, pb.EnrollRequest(model_id=model, identity=identity, input=inp), code
    return rpc, pb.VerifyRequest(model_id=model, identity=identity, input=inp), code


CASES = [0]


def _fuzz(fuzz_server, case):
    CASES[0] += 1
    srv, channel, stub = fuzz_server
    rpc, request, expected = case
    if request.ByteSize() > MAX_BYTES:  # gRPC itself refuses messages over the limit
        expected = C.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(request, timeout=10)
    assert info.value.code() == expected, (rpc, str(request)[:300], info.value.details())
    assert info.value.code() != C.INTERNAL


def _assert_healthy_and_unchanged(fuzz_server):
    srv, channel, stub = fuzz_server
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    assert stub.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=GOOD)).results
    assert srv.gallery.count("tiny-embed") == 1  # no malformed enrolment was stored


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=malformed())
def test_1000_malformed_requests_get_precise_statuses(fuzz_server, case):
    _fuzz(fuzz_server, case)


def test_server_healthy_after_fuzz(fuzz_server):
    assert CASES[0] >= 1000 or CASES[0] == 0  # 0: the fuzz test was deselected
    _assert_healthy_and_unchanged(fuzz_server)


# -- issue 18: undecodable bytes, abusive streams, and a bounded soak ----------------------------

RAW_METHODS = ("Recognize", "RecognizeFeatures", "Enroll", "Verify", "Identify", "DeleteIdentity", "ListModels")
REQUEST_TYPES = {"Recognize": pb.RecognizeRequest, "RecognizeFeatures": pb.RecognizeFeaturesRequest,
                 "Enroll": pb.EnrollRequest, "Verify": pb.VerifyRequest, "Identify": pb.IdentifyRequest,
                 "DeleteIdentity": pb.DeleteIdentityRequest, "ListModels": pb.ListModelsRequest}


def _parses(cls, data: bytes) -> bool:
    try:
        cls.FromString(data)
        return True
    except Exception:  # noqa: BLE001 - DecodeError
        return False


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(RAW_METHODS), data=st.binary(min_size=1, max_size=64))
def test_random_bytes_never_answer_internal(fuzz_server, method, data):
    """Any bytes as a request: undecodable ones are INVALID_ARGUMENT, never INTERNAL."""
    srv, channel, stub = fuzz_server
    call = channel.unary_unary(f"/photoveil.v1.RecognitionService/{method}",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        call(data, timeout=10)
        code = C.OK
    except grpc.RpcError as exc:
        code = exc.code()
    assert code != C.INTERNAL, (method, data)
    if not _parses(REQUEST_TYPES[method], data):
        assert code == C.INVALID_ARGUMENT, (method, data, code)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(good=st.integers(0, 80), garbage=st.binary(min_size=1, max_size=16))
def test_streams_with_garbage_items_end_invalid_argument_and_leak_nothing(fuzz_server, good, garbage):
    import threading
    import time

    srv, channel, stub = fuzz_server
    item = pb.RecognizeRequest(model_id="tiny-cls", input=GOOD).SerializeToString()
    call = channel.stream_stream("/photoveil.v1.RecognitionService/RecognizeStream",
                                 request_serializer=lambda b: b, response_deserializer=pb.RecognizeResponse.FromString)
    try:
        replies = list(call(iter([item] * good + [garbage] + [item] * 5), timeout=20))
        assert _parses(pb.RecognizeRequest, garbage) and len(replies) == good + 6
    except grpc.RpcError as exc:
        assert not _parses(pb.RecognizeRequest, garbage) and exc.code() == C.INVALID_ARGUMENT, exc.details()
    deadline = time.monotonic() + 5
    while any(t.name == "recognize-stream-reader" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.name == "recognize-stream-reader" for t in threading.enumerate())


SOAK_S = float(__import__("os").environ.get("PHOTOVEIL_SOAK_S", "150"))


@pytest.mark.slow
def test_soak_load_bombs_streams_aborts_then_sigterm_exits_0_in_bound(tmp_path):
    """``PHOTOVEIL_SOAK_S`` (default 150) seconds of unary load, decompression bombs, fuzz
    bytes and streams aborted every way against ``photoveil serve``; then SIGTERM must exit
    0 within drain + grace (+ the 6 s of margins), the gallery checkpointed, no INTERNAL."""
    import os
    import random
    import signal
    import threading
    import time

    from test_server_hardening import GARBAGE, hammer_streams, start_serve, tool

    grace, drain = 3.0, 0.5
    proc, target = start_serve(tmp_path, {
        "bind": "127.0.0.1:0", "gallery_path": "gallery.sqlite3", "grace_s": grace, "drain_s": drain,
        "torch_threads": 1, "models": [{"id": "tiny-cls", "source": "tiny"}, {"id": "tiny-embed", "source": "tiny"}],
        "limits": {"max_image_pixels": 40_000_000}})
    bomb_rss = tool("bomb_rss")
    baseline = bomb_rss.status_kb(proc.pid)["VmHWM"]
    bomb = bomb_rss.zero_png(6000)
    stop, codes, lock = threading.Event(), {}, threading.Lock()

    def count(kind, code):
        with lock:
            codes[(kind, code)] = codes.get((kind, code), 0) + 1

    def load():
        ch = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
        s = recognition_pb2_grpc.RecognitionServiceStub(ch)
        raw = ch.unary_unary("/photoveil.v1.RecognitionService/Recognize", request_serializer=lambda b: b,
                             response_deserializer=lambda b: b)
        rng = random.Random(os.getpid())
        i = 0
        while not stop.is_set():
            i += 1
            kind = rng.choice(["recognize", "enroll", "fuzz", "bomb"] if i % 10 == 0 else ["recognize", "fuzz"])
            try:
                if kind == "recognize":
                    s.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=GOOD), timeout=30)
                elif kind == "enroll":
                    s.Enroll(pb.EnrollRequest(model_id="tiny-embed", identity=f"p{i % 7}", input=GOOD), timeout=30)
                elif kind == "bomb":
                    s.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=Input(encoded_image=bomb)), timeout=60)
                else:
                    raw(rng.choice([GARBAGE, rng.randbytes(rng.randint(1, 40))]), timeout=10)
                count(kind, "OK")
            except grpc.RpcError as exc:
                count(kind, exc.code().name)
        ch.close()

    workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    streams = threading.Thread(target=hammer_streams, args=(target, SOAK_S + 30, stop), daemon=True)
    for t in [*workers, streams]:
        t.start()
    time.sleep(SOAK_S)
    peak_mb = (bomb_rss.status_kb(proc.pid)["VmHWM"] - baseline) / 1024
    with lock:
        served = dict(codes)  # what was answered before the signal (after it: UNAVAILABLE, by design)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # load, bombs and streams still running
    try:
        exit_code = proc.wait(drain + grace + 20)
    finally:
        took = time.monotonic() - t0
        stop.set()
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "server.log").read_text()
    print(f"soak {SOAK_S:.0f} s: exit {exit_code} after {took:.1f} s, peak RSS +{peak_mb:.0f} MB, "
          f"calls before SIGTERM {served}")
    assert exit_code == 0, log[-3000:]
    assert took < drain + grace + 6.0, f"exit took {took:.1f} s"
    assert not any(code == "INTERNAL" for _, code in codes), codes
    assert not any(code == "UNAVAILABLE" for _, code in served), served
    assert served.get(("recognize", "OK"), 0) > 100 and served.get(("bomb", "OK"), 0) >= 1, served
    assert peak_mb < 1000, f"peak RSS grew by {peak_mb:.0f} MB"
    wal = tmp_path / "gallery.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0
