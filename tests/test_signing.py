"""Signed artifacts: model-signing ECDSA P-256 sign / verify and every way to refuse."""
from __future__ import annotations

import hashlib
import json

import pytest

from photoveil.cli import main as cli
from photoveil.errors import IntegrityError, InvalidInput, NotFound
from photoveil.signing import SIGNATURE_FILE, keygen, sign_artifact, verify_artifact


def make_artifact(folder, payload: bytes = bytes(range(256)) * 40):
    folder.mkdir(parents=True)
    (folder / "pmt-step.pte").write_bytes(payload)
    manifest = {"method": "pmt-step", "model_id": "toy", "program": "pmt-step.pte",
                "sha256": hashlib.sha256(payload).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return keygen(root / "provider"), keygen(root / "other")


@pytest.fixture
def signed(tmp_path, keys):
    folder = make_artifact(tmp_path / "art")
    sign_artifact(folder, keys[0][0])
    return folder


def test_sign_then_verify(signed, keys):
    assert (signed / SIGNATURE_FILE).is_file()
    assert verify_artifact(signed, keys[0][1]).kind == "pmt-step"


def test_private_key_is_owner_only_and_not_overwritten(keys):
    private, _ = keys[0]
    assert private.stat().st_mode & 0o077 == 0
    with pytest.raises(InvalidInput, match="refusing to overwrite"):
        keygen(private.with_suffix(""))


def test_wrong_key_is_refused(signed, keys):
    with pytest.raises(IntegrityError, match="signed by another key"):
        verify_artifact(signed, keys[1][1])


@pytest.mark.parametrize("byte", [0, 5000, 10239])
def test_one_bit_flip_in_program_is_refused(signed, keys, byte):
    pte = signed / "pmt-step.pte"
    data = bytearray(pte.read_bytes())
    data[byte] ^= 1
    pte.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="pmt-step.pte changed"):
        verify_artifact(signed, keys[0][1])


def test_manifest_edit_is_refused_even_with_consistent_hash(signed, keys):
    # an attacker swaps the program and updates the manifest's sha256 to match
    payload = b"evil program" * 100
    (signed / "pmt-step.pte").write_bytes(payload)
    m = json.loads((signed / "manifest.json").read_text())
    m["sha256"] = hashlib.sha256(payload).hexdigest()
    (signed / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match="differ from what was signed"):
        verify_artifact(signed, keys[0][1])


def test_added_file_unsigned_and_corrupt_bundle_are_refused(signed, keys):
    (signed / "extra.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="extra.bin"):
        verify_artifact(signed, keys[0][1])
    (signed / "extra.bin").unlink()
    (signed / SIGNATURE_FILE).write_text("{not json")
    with pytest.raises(IntegrityError, match="not a valid signature bundle"):
        verify_artifact(signed, keys[0][1])
    (signed / SIGNATURE_FILE).unlink()
    with pytest.raises(IntegrityError, match="not signed"):
        verify_artifact(signed, keys[0][1])


def test_sign_refuses_inconsistent_folder_and_missing_key(tmp_path, keys):
    folder = make_artifact(tmp_path / "a")
    (folder / "pmt-step.pte").write_bytes(b"changed after export")
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        sign_artifact(folder, keys[0][0])
    with pytest.raises(NotFound, match="keygen"):
        sign_artifact(make_artifact(tmp_path / "b"), tmp_path / "nokey.key")
    with pytest.raises(NotFound):
        verify_artifact(tmp_path / "missing", keys[0][1])


def test_cli_sign_verify_exit_codes(tmp_path, capsys):
    assert cli(["artifacts", "keygen", str(tmp_path / "k")]) == 0
    folder = make_artifact(tmp_path / "art")
    assert cli(["artifacts", "sign", str(folder), "--key", str(tmp_path / "k.key")]) == 0
    assert cli(["artifacts", "verify", str(folder), "--public-key", str(tmp_path / "k.pub"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"] is True
    (folder / "manifest.json").write_text("{}")
    assert cli(["artifacts", "verify", str(folder), "--public-key", str(tmp_path / "k.pub")]) == 1
    assert "FAIL" in capsys.readouterr().out
