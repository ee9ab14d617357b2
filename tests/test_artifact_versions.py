"""The artifact's life after publishing, over real loopback servers: versions, retirement, the
compatibility rule for uploads, the phone's update, key rotation and revocation, replicas.

One PMT step program of the tiny recognizer (tests/test_transport.py) is exported once; each
test publishes versions of it into its own provider folder with ``photoveil artifacts``."""
from __future__ import annotations

import json
import shutil

import grpc
import pytest
import torch

from photoveil.artifact import Manifest, read_manifest
from photoveil.catalog import CURRENT_VERSION_KEY, read_catalog
from photoveil.cli import main as cli
from photoveil.client.phone import Phone
from photoveil.client.transport import RecognitionClient, RpcFailed
from photoveil.errors import IntegrityError
from photoveil.keyset import key_id
from photoveil.server.model_host import ModelKind
from photoveil.server.testing import local_server
from photoveil.server.tiny_models import INPUT, tiny_host
from photoveil.signing import keygen
from photoveil.v1 import artifacts_pb2, recognition_pb2 as pb
from tests.test_transport import PEOPLE, RECOGNIZER, faces


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from photoveil.client.protect.pmt import PMTConfig
    from photoveil.client.protect.shallow import ShallowModel
    from photoveil.export import programs as P
    from photoveil.export.lowering import export_program

    folder = tmp_path_factory.mktemp("export") / "pmt-step"
    prog = P.pmt_step_program([ShallowModel([RECOGNIZER.block1], "face", ["block1"])],
                              PMTConfig(steps=30, step_size=2.0), size=INPUT)
    export_program(prog.module, prog.inputs, prog.options, folder)
    return folder


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return {name: keygen(root / name) for name in ("k1", "k2")}


def run(*argv) -> None:
    assert cli(["artifacts", *map(str, argv)]) == 0, argv


@pytest.fixture
def provider(tmp_path, exported, keys):
    """A provider folder with key set 1 = {k1} and pmt-step version 1 signed by k1."""
    root = tmp_path / "published"
    root.mkdir()
    run("keys", "init", "--root", root, "--key", keys["k1"][0], "--add", keys["k1"][1])
    run("publish", exported, "--root", root, "--version", "1", "--key", keys["k1"][0])
    return root


def host():
    h = tiny_host()
    h.register("face", RECOGNIZER, kind=ModelKind.EMBEDDING, input_size=INPUT,
               splits={"block1": (RECOGNIZER.block1, RECOGNIZER.rest)}, version="face-v1")
    return h


@pytest.fixture
def server(provider):
    with local_server(host=host(), artifacts_dir=str(provider)) as (_, target):
        with RecognitionClient(target, timeout_s=30) as rpc:
            for name, image in zip(PEOPLE, faces(0)):
                rpc.enroll("face", name, image)
            yield rpc


def listed(rpc):
    return {(a.artifact_id, a.version): a for a in rpc.list_artifacts()}


def test_older_manifests_still_read():
    old = Manifest.from_dict({"format": "photoveil-artifact/1", "method": "pmt-step", "version": "0.1.0"})
    assert old.kind == "pmt-step" and old.version == "0.1.0" and old.compatible_model_version == ""
    assert Manifest.from_json(old.to_json()).compatible_model_version == ""


def test_publish_retire_list_keep_every_version(provider, exported, keys, capsys):
    run("publish", exported, "--root", provider, "--version", "2", "--key", keys["k1"][0],
        "--model-version", "face-v1")
    manifest = read_manifest(provider / "pmt-step" / "2")
    assert manifest.version == "2" and manifest.compatible_model_version == "face-v1"
    assert (provider / "pmt-step" / "2" / "model.sig").is_file()
    # a version is never overwritten, also not with other content
    assert cli(["artifacts", "publish", str(exported), "--root", str(provider), "--version", "1",
                "--key", str(keys["k1"][0])]) == 2
    assert "already published" in capsys.readouterr().err
    catalog = read_catalog(provider)
    entry = catalog.artifacts["pmt-step"]
    assert entry.current == "2" and [v.status for v in entry.versions] == ["active", "active"]
    run("retire", "pmt-step", "2", "--root", provider)
    after = read_catalog(provider)
    assert after.generation == catalog.generation + 1 and after.artifacts["pmt-step"].current == "1"
    assert (provider / "pmt-step" / "2" / "pmt-step.pte").is_file()  # retiring keeps the files
    capsys.readouterr()
    run("list", "--root", provider)
    table = capsys.readouterr().out.splitlines()
    assert any(line.split()[:3] == ["pmt-step", "1", "current"] for line in table), table
    assert any(line.split()[:3] == ["pmt-step", "2", "retired"] for line in table), table
    # publishing with a key outside the key set is refused
    assert cli(["artifacts", "publish", str(exported), "--root", str(provider), "--version", "3",
                "--key", str(keys["k2"][0])]) == 2
    assert "not an active key" in capsys.readouterr().err


def test_server_lists_versions_serves_older_until_retired(server, provider, exported, keys, tmp_path):
    run("publish", exported, "--root", provider, "--version", "2", "--key", keys["k1"][0])
    arts = listed(server)
    assert set(arts) == {("pmt-step", "1"), ("pmt-step", "2")}
    assert arts["pmt-step", "2"].current and not arts["pmt-step", "1"].current
    old = server.download_artifact("pmt-step", tmp_path / "a", version="1")
    assert read_manifest(old).version == "1"
    assert read_manifest(server.download_artifact("pmt-step", tmp_path / "b")).version == "2"
    run("retire", "pmt-step", "1", "--root", provider)
    assert set(listed(server)) == {("pmt-step", "2")}
    with pytest.raises(RpcFailed) as e:
        server.download_artifact("pmt-step", tmp_path / "c", version="1")
    assert e.value.code == grpc.StatusCode.NOT_FOUND and "retired" in e.value.details and "2" in e.value.details


def test_outdated_upload_is_refused_with_the_current_version_and_the_phone_updates(server, provider, exported,
                                                                                 keys, tmp_path):
    phone = Phone(server, keys["k1"][1], tmp_path / "phone")
    v1 = phone.install("pmt-step", seed=0, progress=False)
    assert v1.ref == ("pmt-step", "1")
    # the provider re-exports for its retrained model and retires version 1
    run("publish", exported, "--root", provider, "--version", "2", "--key", keys["k1"][0],
        "--model-version", "face-v1")
    run("retire", "pmt-step", "1", "--root", provider)
    face = faces(0)[1:2]
    with pytest.raises(RpcFailed) as e:
        server.identify("face", face, artifact=v1.ref)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "retired" in e.value.details and "current version is 2" in e.value.details
    assert e.value.trailers[CURRENT_VERSION_KEY] == "2"
    for ref in (("pmt-step", "7"), ("no-such-artifact", "1")):  # unknown versions and artifacts too
        with pytest.raises(RpcFailed) as e:
            server.recognize_features("face", "block1", torch.zeros(1, 8, 16, 16), artifact=ref)
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    for ref in (("x" * 5000, "1"), ("pmt-step", "1\n2"), ("pmt-step", "ä")):  # hostile references
        with pytest.raises(RpcFailed) as e:
            server.identify("face", face, artifact=ref)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and len(e.value.details) < 300
    # a stream item from the old version fails alone, naming the current version
    items = iter([pb.RecognizeRequest(model_id="face", request_id="old", input=_png(face),
                                      artifact={"artifact_id": "pmt-step", "version": "1"}),
                  pb.RecognizeRequest(model_id="face", request_id="none", input=_png(face))])
    answers = list(server.recognition.RecognizeStream(items, timeout=30))
    assert answers[0].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and "2" in answers[0].error.message
    assert answers[1].results[0].candidates[0].label == PEOPLE[1]  # no artifact named: accepted as before
    # the phone updates (pull, verify, install) and its retry succeeds
    for mode in ("image", "features"):
        answer, used = phone.protect_and_upload(v1, face, "face", mode=mode)
        assert used.ref == ("pmt-step", "2") and answer.top1 == PEOPLE[1], mode
    # a version made for another model version than the one hosted is refused as well
    run("publish", exported, "--root", provider, "--version", "3", "--key", keys["k1"][0],
        "--model-version", "face-v0")
    with pytest.raises(RpcFailed) as e:
        server.identify("face", face, artifact=("pmt-step", "3"))
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and "face-v0" in e.value.details


def _png(face):
    from photoveil import wire
    from photoveil.v1 import tensor_pb2

    return tensor_pb2.Input(encoded_image=wire.encode_image(face[0], "PNG"))


def test_replicas_reading_one_folder_serve_one_set(provider, exported, keys):
    with local_server(host=host(), artifacts_dir=str(provider)) as (_, a), \
            local_server(host=host(), artifacts_dir=str(provider)) as (_, b), \
            RecognitionClient(a) as ra, RecognitionClient(b) as rb:
        def view(rpc):
            reply = rpc.artifacts.ListArtifacts(artifacts_pb2.ListArtifactsRequest(), timeout=10)
            return reply.generation, sorted((x.version, x.current) for x in reply.artifacts)

        assert view(ra) == view(rb)
        run("publish", exported, "--root", provider, "--version", "2", "--key", keys["k1"][0])
        assert view(ra) == view(rb) and view(ra)[1] == [("1", False), ("2", True)]
        with pytest.raises(RpcFailed):
            rb.identify("face", faces(0)[:1], artifact=("pmt-step", "9"))
        run("retire", "pmt-step", "1", "--root", provider)
        assert view(ra) == view(rb) == (read_catalog(provider).generation, [("2", True)])


def test_key_rotation_end_to_end_and_revocation_of_cached_artifacts(server, provider, exported, keys, tmp_path):
    (k1, pub1), (k2, pub2) = keys["k1"], keys["k2"]
    shipped = tmp_path / "app-keys.json"  # what the app ships with: key set 1
    shutil.copy(provider / "_keyset" / "000001" / "keys.json", shipped)
    phone = Phone(server, shipped, tmp_path / "phone")
    old = phone.install("pmt-step", seed=0, progress=False)
    assert old.signer == key_id(pub1.read_bytes())
    # rotation: key set 2 adds k2 (signed by k1), version 2 is signed by k2, key set 3 revokes k1 (signed by k2)
    run("keys", "rotate", "--root", provider, "--key", k1, "--add", pub2)
    run("publish", exported, "--root", provider, "--version", "2", "--key", k2)
    assert set(listed(server)) == {("pmt-step", "1"), ("pmt-step", "2")}  # both keys active: both served
    with pytest.raises(IntegrityError, match="another key"):  # the old phone does not know k2 yet
        Phone(server, shipped, tmp_path / "other").install("pmt-step")
    k1_id = key_id(pub1.read_bytes())
    run("keys", "rotate", "--root", provider, "--key", k2, "--revoke", k1_id[:16])
    # the server stops serving what the revoked key signed
    assert set(listed(server)) == {("pmt-step", "2")}
    # the old phone walks statements 2 and 3 (each signed by a key of the one before) ...
    learned = phone.refresh_keys()
    assert learned.sequence == 3 and [k.status for k in learned.keys] == ["revoked", "active"]
    assert json.loads((tmp_path / "phone" / "keyset" / "keys.json").read_text())["sequence"] == 3
    # ... refuses the artifact k1 signed although it is cached and unchanged ...
    with pytest.raises(IntegrityError, match="revoked"):
        phone.open_cached("pmt-step")
    with pytest.raises(IntegrityError, match="revoked"):
        phone.protect_and_upload(old, faces(0)[:1], "face")
    # ... and verifies the new artifact signed by the new key
    new = phone.install("pmt-step", seed=0, progress=False)
    assert new.ref == ("pmt-step", "2") and new.signer == key_id(pub2.read_bytes())
    answer, _ = phone.protect_and_upload(new, faces(0)[2:3], "face")
    assert answer.top1 == PEOPLE[2]
    # a restarted phone keeps what it learned
    assert Phone(server, shipped, tmp_path / "phone").keys.sequence == 3


@pytest.mark.parametrize("argv, message", [
    (["publish", "{exp}", "--root", "{root}", "--version", "../x", "--key", "{k}"], "--version"),
    (["publish", "{exp}", "--root", "{root}", "--version", "2", "--id", "a/b", "--key", "{k}"], "--id"),
    (["publish", "{exp}", "--root", "{root}/missing", "--version", "2", "--key", "{k}"], "--root"),
    (["publish", "{root}/nofolder", "--root", "{root}", "--version", "2", "--key", "{k}"], "not a folder"),
    (["publish", "{exp}", "--root", "{root}", "--version", "2", "--key", "{root}/no.key"], "--key"),
    (["publish", "{exp}", "--root", "{root}", "--version", "2", "--key", "{k}", "--model-version", "a b"],
     "model version"),
    (["retire", "pmt-step", "9", "--root", "{root}"], "no version"),
    (["retire", "pmt-step", "..", "--root", "{root}"], "version"),
    (["list", "--root", "{root}/missing"], "--root"),
    (["keys", "rotate", "--root", "{root}", "--key", "{k}"], "--add PUB and/or --revoke"),
    (["keys", "rotate", "--root", "{root}", "--key", "{k}", "--revoke", "xyz"], "--revoke"),
    (["keys", "rotate", "--root", "{root}", "--key", "{k}", "--revoke", "00000000"], "must name one key"),
    (["keys", "rotate", "--root", "{root}", "--key", "{k}", "--add", "{root}/no.pub"], "--add"),
    (["keys", "init", "--root", "{root}", "--key", "{k}", "--add", "{pub}"], "already has key set"),
])
def test_cli_bad_input_exits_2_in_one_line(argv, message, provider, exported, keys, capsys):
    fill = {"exp": exported, "root": provider, "k": keys["k1"][0], "pub": keys["k1"][1]}
    before = read_catalog(provider).to_json()
    assert cli(["artifacts", *(a.format(**fill) for a in argv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("photoveil artifacts: error:") and message in err[0], err
    assert read_catalog(provider).to_json() == before  # nothing changed
