"""The Java client (client/android) on a real JVM against a real loopback server.

The provider side is real: a ``pmt-step`` program exported for the server's ``tiny-embed``
recognizer (its split point ``block1`` is the PMT shallow model, so the server recognises
what the phone protected), golden vectors written beside it, signed with a fresh ECDSA
P-256 key, published by the gRPC server with bearer-token auth. The Java program pulls and
verifies the artifact (OpenSSF model-signing bundle checked with java.security), refuses a
tampered, unsigned or wrongly signed copy, checks the golden image decode and request wire
bytes, and uploads the protected face (image tensor and shallow features): the answer is
the enrolled identity and equals what the Python client gets for the same upload.

Skips with the reason where no JDK / protoc / grpc-java jars are installed (``.ci/run``
installs the Debian packages).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from photoveil.paths import ASSETS

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "client" / "android" / "build.sh"
TOKEN_ENV = "PV_ANDROID_TEST_TOKENS"
ARTIFACT_ID = "pmt-tiny"
MODEL = "tiny-embed"


@pytest.fixture(scope="session")
def java_build(tmp_path_factory):
    """Start building the client (once per session) while the provider side is set up."""
    for tool in ("java", "javac", "protoc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (the Java client needs a JDK and protoc; .ci/run installs them)")
    out = tmp_path_factory.mktemp("android-build")
    proc = subprocess.Popen(["bash", str(BUILD)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PHOTOVEIL_ANDROID_BUILD": str(out)})
    yield proc, out
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def java_client(java_build) -> Path:
    """The built client's launcher."""
    proc, out = java_build
    stdout, stderr = proc.communicate(timeout=600)
    if proc.returncode == 3:  # a tool or jar is missing: build.sh names it
        pytest.skip(f"Java client not buildable here: {stderr.strip()}")
    assert proc.returncode == 0, f"client/android/build.sh failed:\n{stdout}\n{stderr}"
    return out / "photoveil-android"


def run_java(launcher: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(launcher), *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def provider(java_build, tmp_path_factory, monkeypatch_module):
    """Export + golden + sign the tiny PMT artifact, enrol two faces, serve with a token."""
    from photoveil.client.protect.pmt import PMTConfig
    from photoveil.client.protect.shallow import ShallowModel
    from photoveil.client.transport import RecognitionClient
    from photoveil.export import programs as P
    from photoveil.export.golden import read_golden, write_golden
    from photoveil.export.lowering import export_program
    from photoveil.facemodels.align import center_crop, load_image
    from photoveil.server.config import AuthConfig
    from photoveil.server.testing import local_server
    from photoveil.server.tiny_models import TinyNet
    from photoveil.signing import keygen, sign_artifact

    root = tmp_path_factory.mktemp("provider")
    artifacts = root / "artifacts"
    net = TinyNet(32, seed=1)  # the server's tiny-embed weights (fixed seed)
    prog = P.pmt_step_program([ShallowModel([net.block1], MODEL, ["block1"])], PMTConfig(steps=30, step_size=2.0),
                              size=32)
    export_program(prog.module, prog.inputs, prog.options, artifacts / ARTIFACT_ID)
    golden = root / "golden"
    write_golden(artifacts / ARTIFACT_ID, golden, steps=30)
    key, pub = keygen(root / "provider")
    _, other = keygen(root / "other")
    sign_artifact(artifacts / ARTIFACT_ID, key)
    token = secrets.token_urlsafe(16)
    monkeypatch_module.setenv(TOKEN_ENV, token)
    _, tensors = read_golden(golden)
    # tiny-embed has random weights: most faces embed alike at 32x32; this one is apart (cos 0.95)
    bob = center_crop(load_image(ASSETS / "faces" / "Angela_Bassett" / "Angela_Bassett_0001.jpg"), 32)
    with local_server(artifacts_dir=str(artifacts), artifacts_public_key=str(pub), auth=AuthConfig(token_env=TOKEN_ENV)) as (_, target):
        with RecognitionClient(target, token=token) as rpc:
            rpc.enroll(MODEL, "alice", tensors["x"])      # the clean golden face
            rpc.enroll(MODEL, "bob", bob[None])
            yield {"target": target, "token": token, "pub": pub, "other": other, "golden": golden,
                   "artifacts": artifacts, "rpc": rpc, "tensors": tensors}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def net_args(p, token=None):
    return ["--target", p["target"], "--plaintext", "--token", token or p["token"], "--deadline-ms", "20000"]


def test_pull_verifies_and_refuses_tampered_unsigned_and_wrong_key(provider, java_client, tmp_path):
    listed = run_java(java_client, "list", *net_args(provider))
    assert listed.returncode == 0, listed.stderr
    arts = json.loads(listed.stdout)["artifacts"]
    assert [(a["artifact_id"], a["kind"], a["signed"]) for a in arts] == [(ARTIFACT_ID, "pmt-step", True)]

    pulled = run_java(java_client, "pull", *net_args(provider), "--artifact", ARTIFACT_ID,
                      "--public-key", provider["pub"], "--out", tmp_path / "phone")
    assert pulled.returncode == 0, pulled.stderr
    info = json.loads(pulled.stdout)
    folder = tmp_path / "phone" / ARTIFACT_ID
    assert info["verified"] and info["kind"] == "pmt-step" and info["model_id"] == MODEL
    assert info["channel_order"] == "RGB" and info["normalisation"]["range"] == [0.0, 1.0]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.sig", "pmt-step.pte"]

    # the same artifact pulled with another pinned key is refused, and nothing is left behind
    wrong = run_java(java_client, "pull", *net_args(provider), "--artifact", ARTIFACT_ID,
                     "--public-key", provider["other"], "--out", tmp_path / "phone2")
    assert wrong.returncode == 1 and f"artifact {ARTIFACT_ID!r} refused: it was signed by another key" in wrong.stderr
    assert not any((tmp_path / "phone2").iterdir())

    def refused(mutate, message):
        copy = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(folder, copy)
        mutate(copy)
        r = run_java(java_client, "verify", "--dir", copy, "--public-key", provider["pub"])
        assert r.returncode == 1 and message in r.stderr, r.stderr

    def flip(copy):
        data = bytearray((copy / "pmt-step.pte").read_bytes())
        data[len(data) // 2] ^= 1
        (copy / "pmt-step.pte").write_bytes(bytes(data))

    refused(flip, "pmt-step.pte changed")
    refused(lambda c: (c / "extra.bin").write_bytes(b"x"), "extra.bin was added")
    refused(lambda c: (c / "manifest.json").unlink(), "manifest.json is missing")
    refused(lambda c: (c / "model.sig").unlink(), "is not signed")
    refused(lambda c: (c / "model.sig").write_text("{not json"), "not valid JSON")

    def resign_payload(copy):  # a statement edited after signing: the signature no longer covers it
        import base64

        bundle = json.loads((copy / "model.sig").read_text())
        stmt = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        stmt["predicate"]["resources"] = stmt["predicate"]["resources"][:1]
        bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
        (copy / "model.sig").write_text(json.dumps(bundle))

    refused(resign_payload, "signature does not verify")


def test_golden_decode_and_wire_bytes(provider, java_client):
    r = run_java(java_client, "golden", "--dir", provider["golden"])
    assert r.returncode == 0, r.stdout + r.stderr
    checks = {(c["check"], c["item"]): c["ok"] for c in json.loads(r.stdout)["checks"]}
    assert checks[("decode", "x")] and checks[("wire", "identify_image")] and checks[("wire", "identify_features")]


def test_upload_is_answered_with_the_enrolled_identity(provider, java_client):
    for request, split in (("identify_image", ""), ("identify_features", "block1")):
        r = run_java(java_client, "identify", *net_args(provider), "--golden", provider["golden"],
                     "--request", request)
        assert r.returncode == 0, r.stderr
        answer = json.loads(r.stdout)
        labels = [c["label"] for c in answer["results"][0]]
        assert labels[0] == "alice", answer
        # the Python client gets the same answer for the same upload
        tensor = provider["tensors"]["features" if split else "x_tN"]
        py = provider["rpc"].identify(MODEL, tensor, split_point=split).results[0].candidates
        assert labels == [c.label for c in py]
        assert [c["score"] for c in answer["results"][0]] == pytest.approx([c.score for c in py], abs=1e-6)
    # an encoded photo (the server decodes it, EXIF orientation applied, and resizes)
    png = provider["golden"] / "image.png"
    r = run_java(java_client, "identify", *net_args(provider), "--model", MODEL, "--image", png)
    assert r.returncode == 0 and json.loads(r.stdout)["results"][0][0]["label"] == "alice", r.stderr


def test_wrong_token_is_unauthenticated_and_bad_arguments_exit_2(provider, java_client):
    r = run_java(java_client, "identify", *net_args(provider, token="not-the-token"), "--golden", provider["golden"])
    assert r.returncode == 1 and r.stderr.startswith("error: UNAUTHENTICATED:"), r.stderr
    r = run_java(java_client, "list", *net_args(provider, token="not-the-token"))
    assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr
    r = run_java(java_client, "identify", "--target", provider["target"], "--frobnicate", "1")
    assert r.returncode == 2 and "unknown argument --frobnicate" in r.stderr
