"""The model host over the project's models (face registry, classifier zoo) and the config file."""
from __future__ import annotations

import json
import sys
import types

import grpc
import pytest
import torch

from photoveil import wire
from photoveil.errors import InvalidInput, NotFound
from photoveil.server.app import host_from_config
from photoveil.server.config import ModelConfig, ServerConfig, load_config
from photoveil.server.model_host import FULL, BatchKey, ModelHost, ModelKind, RgbToGray
from photoveil.server.testing import local_server
from photoveil.v1 import recognition_pb2 as pb, recognition_pb2_grpc
from photoveil.v1.tensor_pb2 import Features, Input

torch.set_num_threads(1)


def test_register_validates():
    host = ModelHost()
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(ValueError, match="model id"):
        host.register("bad id!", net, kind="classification", input_size=8)
    with pytest.raises(ValueError, match="input_size"):
        host.register("m", net, kind="classification", input_size=0)
    with pytest.raises(ValueError, match="verify_threshold"):
        host.register("m", net, kind="embedding", input_size=8, verify_threshold=1.5)
    with pytest.raises(ValueError, match="3 labels for a model with 4 outputs"):
        host.register("m", net, kind="classification", input_size=8, labels=["a", "b", "c"])
    host.register("m", net, kind="classification", input_size=8)
    with pytest.raises(ValueError, match="already registered"):
        host.register("m", net, kind="classification", input_size=8)
    with pytest.raises(NotFound, match="hosts: m"):
        host.get("x")


def test_version_follows_the_weights():
    from photoveil.server.model_host import weights_version

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert weights_version(a) == weights_version(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert weights_version(a) != weights_version(b)


def test_from_zoo_wraps_one_channel_classifiers(monkeypatch):
    from photoveil.zoo import checkpoints
    from photoveil.zoo.registry import create

    made = {}

    def fake_load_trained(arch, dataset="fashion-mnist", path=None):
        made[(arch, dataset)] = net = create(arch, num_classes=10, width=0.25,
                                            in_channels=1 if dataset == "fashion-mnist" else 3)
        return net.eval()

    monkeypatch.setattr(checkpoints, "load_trained", fake_load_trained)
    # photoveil.data.classification takes ~15 s to import here; only its class_names is used.
    fake_data = types.ModuleType("photoveil.data.classification")
    fake_data.class_names = {"fashion-mnist": ("T-shirt/top",) + ("x",) * 9,
                             "cifar10": ("airplane",) + ("y",) * 9}.__getitem__
    monkeypatch.setitem(sys.modules, "photoveil.data.classification", fake_data)
    host = ModelHost.from_zoo({"fm": "resnet18", "c10": "cifar10/resnet18"})
    fm, c10 = host.get("fm"), host.get("c10")
    assert isinstance(fm.module[0], RgbToGray) and not isinstance(c10.module, torch.nn.Sequential)
    assert fm.labels[0] == "T-shirt/top" and c10.labels[0] == "airplane" and fm.kind is ModelKind.CLASSIFICATION
    x = torch.rand(2, 3, 32, 32)
    gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    with torch.no_grad():
        assert torch.allclose(host.run(BatchKey("fm", FULL, (3, 32, 32)), x),
                              made[("resnet18", "fashion-mnist")](gray), atol=1e-5)


def test_config_files_toml_and_json(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('bind = "127.0.0.1:0"\ngallery_path = "g.sqlite3"\n[[models]]\nid = "e"\nsource = "tiny"\n'
                    'name = "tiny-embed"\n[batching]\nmax_batch_size = 8\n[auth]\ntoken_env = "X_TOKENS"\n')
    config = load_config(toml)
    assert config.gallery_path == str(tmp_path / "g.sqlite3") and config.batching.max_batch_size == 8
    assert config.models == [ModelConfig(id="e", source="tiny", name="tiny-embed")]
    host = host_from_config(config)
    assert [m.model_id for m in host.models()] == ["e"] and host.get("e").kind is ModelKind.EMBEDDING
    js = tmp_path / "s.json"
    for data, match in [({"limits": {"rate_per_s": -1}}, "rate_per_s"), ({"batching": {"max_batch_size": 0}},
                        "max_batch_size"), ({"models": [{"id": "a", "source": "onnx"}]}, "accepted: registry"),
                        ({"tls": {"cert": "c.pem"}}, "together"), ({"bind": "nowhere"}, "HOST:PORT"),
                        ({"workers": True}, "workers must be int"), ({"extra": 1}, "unknown key")]:
        js.write_text(json.dumps(data))
        with pytest.raises(InvalidInput, match=match):
            load_config(js)
    (tmp_path / "bad.toml").write_text("bind = ")
    with pytest.raises(InvalidInput, match="does not parse"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(NotFound):
        load_config(tmp_path / "missing.toml")


@pytest.mark.models
def test_face_recognizer_served_whole_and_split(face_models_dir):
    host = ModelHost.from_registry({"face": "faceapi-resnet34"})
    face = host.get("face")
    assert face.input_size == (150, 150) and "block1" in face.feature_shapes and "@" in face.version
    with pytest.raises(InvalidInput, match="recognizers"):
        ModelHost.from_registry(["blazeface"])
    with local_server(ServerConfig(), host=host) as (_, target):
        stub = recognition_pb2_grpc.RecognitionServiceStub(grpc.insecure_channel(target))
        x = torch.rand(1, 3, 150, 150, generator=torch.Generator().manual_seed(0))
        stub.Enroll(pb.EnrollRequest(model_id="face", identity="p1", input=Input(tensor=wire.torch_to_proto(x))))
        shallow, _ = face.split("block1")
        with torch.no_grad():
            feats = shallow(x)
        reply = stub.RecognizeFeatures(pb.RecognizeFeaturesRequest(
            model_id="face", split_point="block1", features=wire.torch_to_proto(feats), top_k=1))
        assert reply.results[0].candidates[0].label == "p1"
        assert reply.results[0].candidates[0].score == pytest.approx(1.0, abs=1e-4)
        # an encoded photo of another size is resized to 150x150 on the server
        big = wire.encode_image(wire.resize(x, (300, 260))[0])
        verdict = stub.Verify(pb.VerifyRequest(model_id="face", identity="p1", input=Input(encoded_image=big)))
        assert verdict.verdicts[0].score > 0.9
        enrolled = stub.Enroll(pb.EnrollRequest(model_id="face", identity="p2", input=Input(
            features=Features(split_point="down64", tensor=wire.torch_to_proto(face.split("down64")[0](x).detach())))))
        assert len(enrolled.record_ids) == 1
