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


# -- the key set: statements signed in the same bundle format, rotation and revocation ----------

def keyset_history(tmp_path, keys):
    from photoveil.keyset import KeyHistory, KeySet

    history = KeyHistory(tmp_path / "_keyset")
    history.publish(KeySet.from_public_keys([keys[0][1]]), keys[0][0])
    return history


def test_key_statement_is_a_model_signing_bundle_and_chains(tmp_path, keys):
    from photoveil.keyset import advance, verify_artifact_with

    history = keyset_history(tmp_path, keys)
    first = history.latest()
    bundle = json.loads((history.folder / "000001" / SIGNATURE_FILE).read_text())
    assert bundle["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    history.publish(history.rotated(add=[keys[1][1]]), keys[0][0])           # 2: + other, signed by provider
    history.publish(history.rotated(revoke=[first.keys[0].id[:10]]), keys[1][0])  # 3: provider revoked, by other
    statements = [(k, s) for _, k, s in history.statements(0)]
    learned = advance(first, statements)
    assert learned.sequence == 3 and [k.status for k in learned.keys] == ["revoked", "active"]
    assert advance(learned, statements) == learned  # old statements are skipped, not a rollback
    with pytest.raises(IntegrityError, match="does not follow"):
        advance(first, statements[2:])  # a gap: 3 cannot be checked against 1
    # an artifact signed by the revoked key is refused under the new set, not under the old one
    folder = make_artifact(tmp_path / "art")
    sign_artifact(folder, keys[0][0])
    assert verify_artifact_with(folder, first)[1] == first.keys[0].id
    with pytest.raises(IntegrityError, match="revoked"):
        verify_artifact_with(folder, learned)


def test_forged_or_broken_key_statements_are_refused(tmp_path, keys):
    from photoveil.keyset import KeySet, advance

    history = keyset_history(tmp_path, keys)
    first = history.latest()
    nxt = history.rotated(add=[keys[1][1]])
    with pytest.raises(InvalidInput, match="not an active key"):
        history.publish(nxt, keys[1][0])  # a key the current set does not hold cannot introduce itself
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "keys.json").write_text(nxt.to_json())
    import model_signing

    from photoveil.signing import _hashing_config
    model_signing.signing.Config().use_elliptic_key_signer(private_key=keys[1][0]) \
        .set_hashing_config(_hashing_config()).sign(forged, forged / SIGNATURE_FILE)
    with pytest.raises(IntegrityError, match="another key"):
        advance(first, [((forged / "keys.json").read_bytes(), (forged / SIGNATURE_FILE).read_bytes())])
    history.publish(nxt, keys[0][0])
    keys_json, bundle = history.statements(1)[0][1:]
    with pytest.raises(IntegrityError, match="does not verify"):  # edited after signing
        advance(first, [(keys_json.replace(b'"active"', b'"revoked"', 1), bundle)])
    revoked = KeySet(3, tuple(k if k.id != first.keys[0].id else type(k)(k.id, k.public_key, "revoked")
                              for k in nxt.keys))
    history.publish(revoked, keys[0][0])
    with pytest.raises(IntegrityError, match="brings back"):
        history.publish(KeySet(4, nxt.keys), keys[1][0])
    with pytest.raises(IntegrityError, match="id"):
        KeySet.from_json(json.dumps({"format": "photoveil-keyset/1", "sequence": 1, "keys": [
            {"id": "0" * 64, "public_key": first.keys[0].public_key, "status": "active"}]}))
    with pytest.raises(IntegrityError, match="key set"):
        KeySet.from_json("{}")
