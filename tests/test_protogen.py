"""The committed stubs in photoveil/v1 match what `python -m photoveil.protogen` generates."""
from __future__ import annotations

import shutil

from photoveil import protogen


def test_committed_stubs_are_fresh():
    problems = protogen.check()
    assert not problems, "stale stubs, run `python -m photoveil.protogen`:\n" + "\n".join(problems)


def test_check_detects_edited_missing_and_orphaned_stubs(tmp_path, monkeypatch):
    copy = tmp_path / "v1"
    shutil.copytree(protogen.STUB_DIR, copy)
    monkeypatch.setattr(protogen, "STUB_DIR", copy)
    assert protogen.check() == []
    grpc_stub = copy / "tensor_pb2_grpc.py"   # another grpcio-tools patch release: only the stamp differs
    grpc_stub.write_text(grpc_stub.read_text().replace("GRPC_GENERATED_VERSION = '", "GRPC_GENERATED_VERSION = '9"))
    assert protogen.check() == []
    (copy / "tensor_pb2.py").write_text((copy / "tensor_pb2.py").read_text() + "\n# edited\n")
    (copy / "artifacts_pb2.pyi").unlink()
    (copy / "removed_pb2.py").write_text("")
    assert sorted(protogen.check()) == sorted([
        "out of date: photoveil/v1/tensor_pb2.py",
        "missing: photoveil/v1/artifacts_pb2.pyi",
        "stale (no proto generates it): photoveil/v1/removed_pb2.py",
    ])


def test_proto_options_for_android():
    for proto in protogen.proto_files():
        text = proto.read_text()
        assert "package photoveil.v1;" in text
        assert 'option java_package = "ai.photoveil.v1";' in text
        assert "option java_multiple_files = true;" in text


def test_services_are_in_the_descriptors():
    from photoveil.v1 import artifacts_pb2, recognition_pb2

    rec = recognition_pb2.DESCRIPTOR.services_by_name["RecognitionService"]
    assert {m.name for m in rec.methods} >= {"Recognize", "RecognizeFeatures", "RecognizeStream", "Enroll",
                                             "Verify", "Identify"}
    stream = rec.methods_by_name["RecognizeStream"]
    assert stream.client_streaming and stream.server_streaming
    art = artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"]
    assert art.methods_by_name["GetArtifact"].server_streaming
