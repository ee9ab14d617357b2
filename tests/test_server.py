"""Every RPC over a real loopback server, and every error status."""
from __future__ import annotations

import hashlib
import json
import threading
import time

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from photoveil import wire
from photoveil.server.config import AuthConfig, LimitsConfig
from photoveil.server.model_host import ModelHost, ModelKind
from photoveil.server.testing import local_server
from photoveil.server.tiny_models import tiny_host
from photoveil.v1 import artifacts_pb2, artifacts_pb2_grpc, recognition_pb2 as pb, recognition_pb2_grpc
from photoveil.v1.tensor_pb2 import Features, Input

torch.set_num_threads(1)
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    a = root / "tiny-embed-block1"
    a.mkdir()
    (a / "shallow.pte").write_bytes(bytes(range(256)) * 5000)  # 1.28 MB: several chunks
    (a / "manifest.json").write_text(json.dumps({"model_id": "tiny-embed", "version": "1", "method": "pmt"}))
    (a / "model.sig").write_text('{"bundle": "x"}')
    b = root / "gen"
    b.mkdir()
    (b / "gen.pte").write_bytes(b"\0" * 10)
    (b / "manifest.json").write_text(json.dumps({"model_id": "other", "method": "generator"}))
    (root / "broken").mkdir()  # no .pte: not published
    return root


@pytest.fixture(scope="module")
def server(artifacts_dir):
    with local_server(artifacts_dir=str(artifacts_dir), limits=LimitsConfig(max_batch_items=8)) as (srv, target):
        yield srv, target


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server[1])
    yield recognition_pb2_grpc.RecognitionServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def artifacts(server):
    channel = grpc.insecure_channel(server[1])
    yield artifacts_pb2_grpc.ArtifactServiceStub(channel)
    channel.close()


def images(n=1, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def tensor_input(x):
    return Input(tensor=wire.torch_to_proto(x))


def code_of(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value.code(), info.value.details()


# -- round trips -----------------------------------------------------------------------

def test_list_models(stub):
    models = {m.model_id: m for m in stub.ListModels(pb.ListModelsRequest()).models}
    assert set(models) == {"tiny-embed", "tiny-cls"}
    cls = models["tiny-cls"]
    assert cls.kind == pb.MODEL_KIND_CLASSIFICATION and (cls.input_height, cls.input_width) == (32, 32)
    assert list(cls.split_points["block1"].dims) == [8, 16, 16] and len(cls.labels) == 10
    assert models["tiny-embed"].kind == pb.MODEL_KIND_EMBEDDING and models["tiny-embed"].version.startswith("sha256:")


def test_recognize_tensor_matches_eager_model(stub, server):
    x = images(3)
    reply = stub.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=tensor_input(x), top_k=3,
                                               request_id="r1", return_output=True))
    hosted = server[0].host.get("tiny-cls")
    assert reply.model_id == "tiny-cls" and reply.model_version == hosted.version and reply.request_id == "r1"
    with torch.no_grad():
        probs = torch.softmax(hosted.module(x), 1)
    assert len(reply.results) == 3
    for result, p, row in zip(reply.results, probs, hosted.module(x).detach()):
        top = p.topk(3)
        assert [c.index for c in result.candidates] == top.indices.tolist()
        assert [c.label for c in result.candidates] == [hosted.labels[i] for i in top.indices]
        assert np.allclose([c.score for c in result.candidates], top.values.numpy(), atol=1e-5)
        assert torch.allclose(wire.proto_to_torch(result.output), row, atol=1e-5)


def test_recognize_uint8_and_encoded_images_resized(stub):
    x = images(1)[0]
    u8 = (x * 255).round().byte()
    a = stub.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=tensor_input(u8), return_output=True))
    b = stub.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=Input(encoded_image=wire.encode_image(x)),
                                           return_output=True))
    assert a.results[0].candidates[0].index == b.results[0].candidates[0].index
    assert len(a.results[0].candidates) == 5  # top_k 0 -> 5
    big = wire.resize(x[None], (96, 80))[0]  # any size: resized to 32x32 on the server
    c = stub.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=Input(encoded_image=wire.encode_image(big))))
    assert len(c.results) == 1


def test_recognize_features_equals_full_model(stub, server):
    x = images(2, seed=3)
    hosted = server[0].host.get("tiny-cls")
    shallow, _ = hosted.split("block1")
    with torch.no_grad():
        feats = shallow(x)
    full = stub.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=tensor_input(x), return_output=True))
    split = stub.RecognizeFeatures(pb.RecognizeFeaturesRequest(
        model_id="tiny-cls", split_point="block1", features=wire.torch_to_proto(feats), return_output=True))
    via_input = stub.Recognize(pb.RecognizeRequest(
        model_id="tiny-cls", input=Input(features=Features(split_point="block1", tensor=wire.torch_to_proto(feats))),
        return_output=True))
    for a, b, c in zip(full.results, split.results, via_input.results):
        assert torch.allclose(wire.proto_to_torch(a.output), wire.proto_to_torch(b.output), atol=1e-5)
        assert [x.index for x in a.candidates] == [x.index for x in b.candidates] == [x.index for x in c.candidates]
    half = stub.RecognizeFeatures(pb.RecognizeFeaturesRequest(  # FP16 features, one item without batch dim
        model_id="tiny-cls", split_point="block1", features=wire.torch_to_proto(feats[0].half())))
    assert len(half.results) == 1


def test_gallery_enroll_verify_identify_delete(stub):
    alice, bob, carol = images(2, seed=10), images(1, seed=11), images(1, seed=12)
    enrolled = stub.Enroll(pb.EnrollRequest(model_id="tiny-embed", identity="alice", input=tensor_input(alice)))
    assert len(enrolled.record_ids) == 2 and enrolled.total_for_identity == 2 and enrolled.model_version
    stub.Enroll(pb.EnrollRequest(model_id="tiny-embed", identity="bob", input=tensor_input(bob)))
    stub.Enroll(pb.EnrollRequest(model_id="tiny-embed", identity="carol", input=tensor_input(carol)))
    verdict = stub.Verify(pb.VerifyRequest(model_id="tiny-embed", identity="alice", input=tensor_input(alice[1])))
    assert verdict.verdicts[0].match and verdict.verdicts[0].score == pytest.approx(1.0, abs=1e-5)
    assert verdict.verdicts[0].threshold == pytest.approx(0.9)
    strict = stub.Verify(pb.VerifyRequest(model_id="tiny-embed", identity="bob", input=tensor_input(alice[0]),
                                          threshold=0.999999))
    assert not strict.verdicts[0].match and strict.verdicts[0].score < 0.999999
    found = stub.Identify(pb.IdentifyRequest(model_id="tiny-embed", input=tensor_input(torch.cat([bob, carol])),
                                             top_k=2))
    assert [r.candidates[0].label for r in found.results] == ["bob", "carol"]
    assert all(len(r.candidates) == 2 and r.candidates[0].score >= r.candidates[1].score for r in found.results)
    rec = stub.Recognize(pb.RecognizeRequest(model_id="tiny-embed", input=tensor_input(carol)))  # = identify
    assert rec.results[0].candidates[0].label == "carol" and rec.results[0].candidates[0].index == -1
    assert stub.DeleteIdentity(pb.DeleteIdentityRequest(model_id="tiny-embed", identity="carol")).deleted == 1
    assert code_of(stub.Verify, pb.VerifyRequest(model_id="tiny-embed", identity="carol",
                                                 input=tensor_input(carol)))[0] == Code.NOT_FOUND


def test_recognize_stream_answers_each_item_and_survives_bad_ones(stub):
    good = [pb.RecognizeRequest(model_id="tiny-cls", input=tensor_input(images(1, seed=i)), request_id=f"g{i}")
            for i in range(20)]
    bad = [pb.RecognizeRequest(model_id="nope", request_id="b0"),
           pb.RecognizeRequest(model_id="tiny-cls", input=Input(encoded_image=b"\x89PNG\r\n\x1a\nxx"), request_id="b1")]
    requests = good[:10] + bad + good[10:]
    replies = list(stub.RecognizeStream(iter(requests)))
    assert [r.request_id for r in replies] == [r.request_id for r in requests]
    by_id = {r.request_id: r for r in replies}
    assert by_id["b0"].error.code == Code.NOT_FOUND.value[0]
    assert by_id["b1"].error.code == Code.INVALID_ARGUMENT.value[0] and "corrupt PNG" in by_id["b1"].error.message
    assert all(len(by_id[g.request_id].results) == 1 and not by_id[g.request_id].HasField("error") for g in good)


def test_list_and_get_artifacts(artifacts, artifacts_dir):
    listed = {a.artifact_id: a for a in artifacts.ListArtifacts(artifacts_pb2.ListArtifactsRequest()).artifacts}
    assert set(listed) == {"tiny-embed-block1", "gen"}
    info = listed["tiny-embed-block1"]
    # a '{"bundle": "x"}' model.sig is served but is no signature: signed means it verifies
    assert not info.signed and info.model_id == "tiny-embed" and info.method == "pmt" and not listed["gen"].signed
    assert [f.role for f in info.files] == [artifacts_pb2.FILE_ROLE_PROGRAM, artifacts_pb2.FILE_ROLE_MANIFEST,
                                            artifacts_pb2.FILE_ROLE_SIGNATURE]
    only = artifacts.ListArtifacts(artifacts_pb2.ListArtifactsRequest(model_id="other")).artifacts
    assert [a.artifact_id for a in only] == ["gen"]
    chunks = list(artifacts.GetArtifact(artifacts_pb2.GetArtifactRequest(artifact_id="tiny-embed-block1",
                                                                         chunk_size=100_000)))
    assert chunks[0].WhichOneof("part") == "info" and chunks[0].info == info
    files: dict[str, bytearray] = {}
    for c in chunks[1:]:
        buf = files.setdefault(c.chunk.name, bytearray())
        assert c.chunk.offset == len(buf)
        buf += c.chunk.data
    assert sum(c.chunk.name == "shallow.pte" for c in chunks[1:]) == 13
    for f in info.files:
        assert hashlib.sha256(files[f.name]).hexdigest() == f.sha256 and len(files[f.name]) == f.size
    assert bytes(files["shallow.pte"]) == (artifacts_dir / "tiny-embed-block1" / "shallow.pte").read_bytes()


def test_health_and_reflection(server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(server[1])
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "photoveil.v1.RecognitionService", "photoveil.v1.ArtifactService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in reply.list_services_response.service}
    assert {"photoveil.v1.RecognitionService", "photoveil.v1.ArtifactService", "grpc.health.v1.Health"} <= names
    channel.close()


# -- error statuses ------------------------------------------------------------------------

def _rec(stub, inp, model="tiny-cls", **kw):
    return code_of(stub.Recognize, pb.RecognizeRequest(model_id=model, input=inp, **kw))


def test_invalid_argument_statuses(stub):
    t = wire.torch_to_proto(images(1))
    cases = {
        "bad shape": Input(tensor=wire.torch_to_proto(torch.rand(1, 3, 16, 16))),
        "bad channels": Input(tensor=wire.torch_to_proto(torch.rand(1, 4, 32, 32))),
        "bad dtype": Input(tensor=wire.torch_to_proto(torch.zeros(1, 3, 32, 32, dtype=torch.int32))),
        "unknown dtype": Input(tensor=type(t)(datatype="FP8", shape=t.shape, raw_contents=t.raw_contents)),
        "byte count": Input(tensor=type(t)(datatype="FP32", shape=t.shape, raw_contents=t.raw_contents[:-4])),
        "nan": Input(tensor=wire.torch_to_proto(torch.full((1, 3, 32, 32), float("nan")))),
        "inf": Input(tensor=wire.torch_to_proto(torch.full((1, 3, 32, 32), float("inf")))),
        "range": Input(tensor=wire.torch_to_proto(torch.full((1, 3, 32, 32), 3.0))),
        "corrupt image": Input(encoded_image=wire.encode_image(images(1)[0])[:60]),
        "not an image": Input(encoded_image=b"GIF89a"),
        "empty": Input(),
        "bad features": Input(features=Features(split_point="block1", tensor=wire.torch_to_proto(torch.rand(1, 8, 4, 4)))),
        "nan features": Input(features=Features(split_point="block1",
                                                tensor=wire.torch_to_proto(torch.full((1, 8, 16, 16), float("nan"))))),
        "int features": Input(features=Features(split_point="block1",
                                                tensor=wire.torch_to_proto(torch.zeros(1, 8, 16, 16, dtype=torch.int64)))),
    }
    for name, inp in cases.items():
        code, details = _rec(stub, inp)
        assert code == Code.INVALID_ARGUMENT, (name, code, details)
        assert details and "internal" not in details, name
    assert _rec(stub, Input(tensor=t), top_k=5000)[0] == Code.INVALID_ARGUMENT
    assert code_of(stub.Enroll, pb.EnrollRequest(model_id="tiny-cls", identity="x", input=Input(tensor=t)))[0] \
        == Code.INVALID_ARGUMENT  # classification model has no gallery
    assert code_of(stub.Enroll, pb.EnrollRequest(model_id="tiny-embed", identity="a\nb", input=Input(tensor=t)))[0] \
        == Code.INVALID_ARGUMENT
    assert code_of(stub.RecognizeFeatures, pb.RecognizeFeaturesRequest(model_id="tiny-cls", split_point="block1"))[0] \
        == Code.INVALID_ARGUMENT


def test_not_found_statuses(stub, artifacts):
    t = Input(tensor=wire.torch_to_proto(images(1)))
    code, details = _rec(stub, t, model="resnet-9000")
    assert code == Code.NOT_FOUND and "tiny-cls, tiny-embed" in details
    code, details = code_of(stub.RecognizeFeatures, pb.RecognizeFeaturesRequest(
        model_id="tiny-cls", split_point="layer9", features=wire.torch_to_proto(torch.rand(1, 8, 16, 16))))
    assert code == Code.NOT_FOUND and "published: block1" in details
    assert code_of(stub.Verify, pb.VerifyRequest(model_id="tiny-embed", identity="nobody", input=t))[0] == Code.NOT_FOUND
    assert code_of(stub.DeleteIdentity, pb.DeleteIdentityRequest(model_id="tiny-embed", identity="nobody"))[0] \
        == Code.NOT_FOUND
    get = lambda **kw: list(artifacts.GetArtifact(artifacts_pb2.GetArtifactRequest(**kw)))  # noqa: E731
    assert code_of(get, artifact_id="missing")[0] == Code.NOT_FOUND
    assert code_of(get, artifact_id="../etc")[0] == Code.INVALID_ARGUMENT
    assert code_of(get, artifact_id="gen", chunk_size=10)[0] == Code.INVALID_ARGUMENT


def test_resource_exhausted_for_too_many_items(stub):
    code, details = _rec(stub, Input(tensor=wire.torch_to_proto(torch.rand(9, 3, 32, 32))))
    assert code == Code.RESOURCE_EXHAUSTED and "limit is 8" in details


def test_oversize_message_and_pixels():
    limits = LimitsConfig(max_message_bytes=64 << 10, max_image_pixels=100 * 100)
    with local_server(limits=limits) as (_, target):
        stub = recognition_pb2_grpc.RecognitionServiceStub(grpc.insecure_channel(target))
        big = Input(tensor=wire.torch_to_proto(torch.rand(8, 3, 32, 32)))  # 98 KB > 64 KiB
        assert _rec(stub, big)[0] == Code.RESOURCE_EXHAUSTED
        png = wire.encode_image(torch.zeros(3, 101, 100))
        code, details = _rec(stub, Input(encoded_image=png))
        assert code == Code.RESOURCE_EXHAUSTED and "pixels" in details
        assert stub.Recognize(pb.RecognizeRequest(model_id="tiny-cls", input=tensor_input(images(1)))).results


def test_internal_errors_are_isolated_and_logged(caplog):
    class Exploding(torch.nn.Module):
        def forward(self, x):
            if float(x.mean()) > 0.9:
                raise RuntimeError("kaboom")
            return x.flatten(1)[:, :4]

    host = ModelHost()
    host.register("boom", Exploding(), kind=ModelKind.CLASSIFICATION, input_size=8)
    with local_server(host=host) as (_, target):
        stub = recognition_pb2_grpc.RecognitionServiceStub(grpc.insecure_channel(target))
        code, details = _rec(stub, Input(tensor=wire.torch_to_proto(torch.ones(1, 3, 8, 8))), model="boom")
        assert code == Code.INTERNAL and "incident" in details and "kaboom" not in details
        assert any("incident" in r.getMessage() for r in caplog.records)
        assert stub.Recognize(pb.RecognizeRequest(model_id="boom", input=tensor_input(torch.zeros(1, 3, 8, 8)))).results


# -- auth, TLS, rate limit -------------------------------------------------------------------

def test_bearer_token_auth(monkeypatch):
    monkeypatch.setenv("PV_TEST_TOKENS", "s3cret-one, s3cret-two")
    with local_server(auth=AuthConfig(token_env="PV_TEST_TOKENS")) as (_, target):
        channel = grpc.insecure_channel(target)
        stub = recognition_pb2_grpc.RecognitionServiceStub(channel)
        req = pb.ListModelsRequest()
        code, details = code_of(stub.ListModels, req)
        assert code == Code.UNAUTHENTICATED and "authorization" in details
        assert code_of(stub.ListModels, req, metadata=[("authorization", "Bearer wrong")])[0] == Code.UNAUTHENTICATED
        assert code_of(stub.ListModels, req, metadata=[("authorization", "Basic s3cret-one")])[0] == Code.UNAUTHENTICATED
        for token in ("s3cret-one", "s3cret-two"):
            assert stub.ListModels(req, metadata=[("authorization", f"Bearer {token}")]).models
        stream = stub.RecognizeStream(iter([pb.RecognizeRequest(model_id="tiny-cls")]))
        assert code_of(list, stream)[0] == Code.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel)  # probes stay open
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def test_auth_env_must_be_set(monkeypatch):
    from photoveil.errors import InvalidInput

    monkeypatch.delenv("PV_UNSET_TOKENS", raising=False)
    with pytest.raises(InvalidInput, match="PV_UNSET_TOKENS"):
        with local_server(auth=AuthConfig(token_env="PV_UNSET_TOKENS")):
            pass


def test_tls_with_token(tmp_path, monkeypatch):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from photoveil.server.config import TlsConfig
    from photoveil.server.health import wait_serving

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(pem)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    monkeypatch.setenv("PV_TLS_TOKEN", "tls-token")
    tls = TlsConfig(cert=str(tmp_path / "cert.pem"), key=str(tmp_path / "key.pem"))
    with local_server(tls=tls, auth=AuthConfig(token_env="PV_TLS_TOKEN")) as (_, target):
        creds = grpc.composite_channel_credentials(grpc.ssl_channel_credentials(root_certificates=pem),
                                                   grpc.access_token_call_credentials("tls-token"))
        wait_serving(target, credentials=grpc.ssl_channel_credentials(root_certificates=pem))
        stub = recognition_pb2_grpc.RecognitionServiceStub(grpc.secure_channel(target, creds))
        assert len(stub.ListModels(pb.ListModelsRequest()).models) == 2  # token sent as "Bearer tls-token"
        plain = recognition_pb2_grpc.RecognitionServiceStub(grpc.insecure_channel(target))
        assert code_of(plain.ListModels, pb.ListModelsRequest(), timeout=3)[0] == Code.UNAVAILABLE


def test_rate_limit():
    with local_server(limits=LimitsConfig(rate_per_s=1.0, burst=5)) as (_, target):
        stub = recognition_pb2_grpc.RecognitionServiceStub(grpc.insecure_channel(target))
        codes = []
        for _ in range(8):
            try:
                stub.ListModels(pb.ListModelsRequest())
                codes.append(Code.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                assert "rate limit" in exc.details()
        assert codes[:5] == [Code.OK] * 5 and Code.RESOURCE_EXHAUSTED in codes[5:]
        # auth is off: a made-up authorization header does not buy a fresh bucket (keyed on the peer)
        assert code_of(stub.ListModels, pb.ListModelsRequest(),
                       metadata=[("authorization", "Bearer other")])[0] == Code.RESOURCE_EXHAUSTED


def test_token_bucket_refills():
    from photoveil.server.interceptors import TokenBucket

    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=2, clock=lambda: now[0])
    assert bucket.take() and bucket.take() and not bucket.take()
    now[0] = 0.5
    assert bucket.take() and not bucket.take()
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0, 1)


# -- graceful shutdown -------------------------------------------------------------------------

def test_graceful_stop_finishes_in_flight_calls():
    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(1.0)
            return x.flatten(1)[:, :3]

    host = tiny_host()
    host.register("slow", Slow(), kind=ModelKind.CLASSIFICATION, input_size=8)
    with local_server(host=host) as (srv, target):
        channel = grpc.insecure_channel(target)
        stub = recognition_pb2_grpc.RecognitionServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        result = {}

        def call():
            result["reply"] = stub.Recognize(pb.RecognizeRequest(model_id="slow",
                                                                 input=tensor_input(torch.rand(1, 3, 8, 8))))

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.3)  # the call is now inside the model
        statuses = []

        def watch():
            try:
                for r in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=2):
                    statuses.append(r.status)
            except grpc.RpcError:
                pass  # the stream ends when the server stops

        watcher = threading.Thread(target=watch)
        watcher.start()
        time.sleep(0.1)
        stopper = threading.Thread(target=srv.stop, args=(5.0,))
        stopper.start()
        t.join(5)
        stopper.join(10)
        watcher.join(5)
        assert result["reply"].results and len(result["reply"].results[0].candidates) == 3
        assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
        assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
        assert code_of(stub.ListModels, pb.ListModelsRequest(), timeout=2)[0] == Code.UNAVAILABLE
