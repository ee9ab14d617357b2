"""The typed client and the phone-side path over a real loopback server.

The phone pulls a signed ``pmt-step`` artifact made for the server's tiny-embed model
(the ``block1`` of its ``face`` model is the authorized shallow model), verifies it, protects on the
ExecuTorch runtime and uploads the protected image or its features: the server must still
identify the person; a tampered or wrongly-signed artifact must never load."""
from __future__ import annotations

import threading
import time

import grpc
import pytest
import torch
from torch import nn

from photoveil import wire
from photoveil.client.phone import Phone
from photoveil.client.protect.pmt import PMTConfig
from photoveil.client.protect.shallow import ShallowModel
from photoveil.client.transport import RecognitionClient, RetryPolicy, RpcFailed
from photoveil.errors import IntegrityError, InvalidInput
from photoveil.export import programs as P
from photoveil.export.lowering import export_program
from photoveil.server.app import build_server
from photoveil.server.config import ServerConfig
from photoveil.server.model_host import ModelKind
from photoveil.server.testing import local_server
from photoveil.server.tiny_models import INPUT, tiny_host
from photoveil.signing import keygen, sign_artifact

PEOPLE = ("ada", "bob", "cyd", "dee")


def faces(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(len(PEOPLE), 3, INPUT, INPUT, generator=g)


class Recognizer(nn.Module):
    """A small embedding net that keeps spatial layout (so different pictures embed apart):
    ``block1`` = conv-relu (the published shallow part), then flatten + linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.block1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.rest = nn.Sequential(nn.Flatten(), nn.Linear(8 * 16 * 16, 64))

    def forward(self, x):
        return self.rest(self.block1(x))


RECOGNIZER = Recognizer().eval()


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    """Signed artifacts: the PMT step of tiny-embed's block1, a copy signed by another
    key, and a tampered copy."""
    root = tmp_path_factory.mktemp("provider")
    (private, public), (other, _) = keygen(root / "keys" / "provider"), keygen(root / "keys" / "other")
    shallow = ShallowModel([RECOGNIZER.block1], "face", ["block1"])  # the server's own layers
    prog = P.pmt_step_program([shallow], PMTConfig(steps=30, step_size=2.0), size=INPUT)
    arts = root / "artifacts"
    for name, key in (("pmt-step", private), ("wrong-key", other), ("tampered", private)):
        export_program(prog.module, prog.inputs, prog.options, arts / name)
        sign_artifact(arts / name, key)
    pte = arts / "tampered" / "pmt-step.pte"
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 1
    pte.write_bytes(bytes(data))
    return arts, public


@pytest.fixture(scope="module")
def server(provider):
    host = tiny_host()
    host.register("face", RECOGNIZER, kind=ModelKind.EMBEDDING, input_size=INPUT,
                  splits={"block1": (RECOGNIZER.block1, RECOGNIZER.rest)})
    with local_server(host=host, artifacts_dir=str(provider[0]), artifacts_public_key=str(provider[1])) as (srv, target):
        yield target


@pytest.fixture(scope="module")
def rpc(server):
    with RecognitionClient(server, timeout_s=20) as client:
        for name, image in zip(PEOPLE, faces(0)):
            client.enroll("face", name, image)
        yield client


def test_phone_protects_and_the_authorized_server_still_recognises(rpc, provider, tmp_path):
    phone = Phone(rpc, provider[1], tmp_path)
    pmt = phone.install("pmt-step", seed=0, progress=False)
    assert pmt.kind == "pmt-step" and (tmp_path / "pmt-step" / "model.sig").is_file()
    clean = faces(0)
    protected, ms = phone.protect(pmt, clean)
    assert protected.shape == clean.shape and ms > 0
    assert (protected - clean).abs().mean() > 0.1  # the picture is obfuscated
    scores = []
    for i, name in enumerate(PEOPLE):
        image = phone.upload_image("face", protected[i:i + 1])
        assert image.top1 == name and image.bytes_sent == len(wire.encode_image(protected[i], "PNG"))
        feats = phone.upload_features("face", pmt.split, Phone.features(pmt, protected[i:i + 1]))
        assert feats.top1 == name and feats.bytes_sent == 8 * 16 * 16 * 4
        scores.append(image.scores[0])
    # the control: noise that moves the pixels as far, without PMT, loses the person
    g = torch.Generator().manual_seed(1)
    noisy = (clean + 0.5 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    noisy_scores = [dict(zip(a.labels, a.scores)).get(name, -1.0)
                    for a, name in ((phone.upload_image("face", noisy[i:i + 1]), name) for i, name in enumerate(PEOPLE))]
    assert min(scores) > 0.9 and max(noisy_scores) < min(scores) - 0.05, (scores, noisy_scores)


@pytest.mark.parametrize("artifact, message", [("tampered", "changed"), ("wrong-key", "another key")])
def test_phone_refuses_bad_artifacts_and_keeps_nothing(rpc, provider, tmp_path, artifact, message):
    phone = Phone(rpc, provider[1], tmp_path)
    with pytest.raises(IntegrityError, match=message):
        phone.install(artifact)
    assert not (tmp_path / artifact).exists()


def test_download_checks_listing_and_replaces_old_copy(rpc, provider, tmp_path):
    listed = {a.artifact_id: a for a in rpc.list_artifacts()}
    assert {"pmt-step", "wrong-key", "tampered"} <= set(listed) and listed["pmt-step"].signed
    (tmp_path / "pmt-step").mkdir()
    (tmp_path / "pmt-step" / "stale.bin").write_bytes(b"old")
    folder = rpc.download_artifact("pmt-step", tmp_path, chunk_size=4096)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.sig", "pmt-step.pte"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_errors_keep_their_status(rpc):
    with pytest.raises(RpcFailed) as e:
        rpc.identify("no-such-model", faces(0)[0])
    assert e.value.code == grpc.StatusCode.NOT_FOUND and "no-such-model" in str(e.value)
    with pytest.raises(RpcFailed) as e:
        rpc.recognize("tiny-cls", torch.full((3, 8, 8), float("nan")))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidInput):
        rpc.recognize("tiny-cls", "not an image")


def test_retries_unavailable_until_the_server_is_up():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ServerConfig(bind=f"127.0.0.1:{port}", gallery_path=":memory:")
    started = {}

    def start_late():
        time.sleep(0.6)
        server, _ = build_server(config, tiny_host())
        started["server"] = server.start()

    thread = threading.Thread(target=start_late)
    thread.start()
    retry = RetryPolicy(retries=10, initial_backoff_s=0.1, max_backoff_s=0.4)
    try:
        with RecognitionClient(f"127.0.0.1:{port}", timeout_s=2, retry=retry) as client:
            models = client.list_models()
        assert {m.model_id for m in models} >= {"tiny-embed", "tiny-cls"}
    finally:
        thread.join()
        started["server"].stop(0)


def test_gives_up_after_bounded_retries():
    retry = RetryPolicy(retries=2, initial_backoff_s=0.05, max_backoff_s=0.05)
    t0 = time.monotonic()
    with RecognitionClient("127.0.0.1:1", timeout_s=1, retry=retry) as client:
        with pytest.raises(RpcFailed) as e:
            client.list_models()
    assert e.value.code == grpc.StatusCode.UNAVAILABLE and time.monotonic() - t0 < 10
    with pytest.raises(InvalidInput):
        RetryPolicy(retries=-1)
