"""The provider's key set: which signing keys a phone trusts, rotated and revoked by signed statements.

A phone pins a *key set*, not one key. The provider changes it only by publishing the next
*statement*: a folder holding ``keys.json`` (:class:`KeySet`: a sequence number and every
key with its status) signed with OpenSSF ``model-signing`` — the same Sigstore bundle
(``model.sig``) and the same ECDSA P-256 keys as the artifacts — by a key that is active in
the previous statement. The provider keeps them all (:class:`KeyHistory`)::

    <keyset dir>/000001/keys.json    the first set (ships in the app: trusted as shipped)
    <keyset dir>/000001/model.sig
    <keyset dir>/000002/...          adds a key, or revokes one; signed by a key of 000001

A phone that has set ``n`` accepts statement ``n+1`` only if a key active in set ``n``
signed it (:func:`advance`), so it can walk any number of rotations it missed. A revoked
key never becomes active again, and an artifact it signed is refused even when it is
already on the phone (:func:`verify_artifact_with`).

A key's id is the sha256 of its public key PEM: what ``model-signing`` writes into the
bundle as the key *hint*, so the verifier picks the key by the bundle and still checks the
signature with it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from photoveil.artifact import SIGNATURE_FILE, Manifest
from photoveil.errors import IntegrityError, InvalidInput, NotFound

KEYS_FILE = "keys.json"
FORMAT = "photoveil-keyset/1"
ACTIVE, REVOKED = "active", "revoked"
STATEMENT_DIR = re.compile(r"^\d{6}$")


def _public_pem(pem: bytes, where: str) -> bytes:
    """The canonical SubjectPublicKeyInfo PEM of an EC P-256 public key (as model-signing hashes it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise InvalidInput(f"{where} is not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidInput(f"{where} is not an ECDSA P-256 public key (what `photoveil artifacts keygen` makes)")
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(pem: bytes, where: str = "public key") -> str:
    """sha256 hex of the canonical public PEM: the bundle's key hint."""
    return hashlib.sha256(_public_pem(pem, where)).hexdigest()


def private_key_id(path: str | os.PathLike, password: str | None = None) -> str:
    """The id of the public half of a PEM private key file."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    if not path.is_file():
        raise NotFound(f"private key {path} does not exist; make a pair with `photoveil artifacts keygen`")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password.encode() if password else None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot read private key {path}: {exc}") from None
    return key_id(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))


@dataclass(frozen=True)
class Key:
    id: str
    public_key: str     # PEM text
    status: str = ACTIVE

    @property
    def short(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class KeySet:
    """One statement's content: ``sequence`` (1, 2, ...) and every key ever in the set."""

    sequence: int
    keys: tuple[Key, ...]

    def active(self) -> list[Key]:
        return [k for k in self.keys if k.status == ACTIVE]

    def get(self, kid: str) -> Key | None:
        return next((k for k in self.keys if k.id == kid), None)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "sequence": self.sequence,
                           "keys": [dataclasses.asdict(k) for k in self.keys]}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str = KEYS_FILE) -> KeySet:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise IntegrityError(f"{where} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise IntegrityError(f"{where} is not a {FORMAT} key set")
        seq, raw = data.get("sequence"), data.get("keys")
        if not isinstance(seq, int) or seq < 1 or not isinstance(raw, list):
            raise IntegrityError(f"{where}: needs an integer sequence >= 1 and a list of keys")
        keys = []
        for i, k in enumerate(raw):
            if not isinstance(k, dict) or k.get("status") not in (ACTIVE, REVOKED) \
                    or not isinstance(k.get("public_key"), str):
                raise IntegrityError(f"{where}: key {i} needs public_key (PEM) and status {ACTIVE}|{REVOKED}")
            try:
                kid = key_id(k["public_key"].encode(), f"{where}: key {i}")
            except InvalidInput as exc:
                raise IntegrityError(str(exc)) from None
            if k.get("id") != kid:
                raise IntegrityError(f"{where}: key {i} has id {str(k.get('id'))[:16]!r}, but its public key's "
                                     f"sha256 is {kid[:16]}")
            keys.append(Key(kid, k["public_key"], k["status"]))
        if len({k.id for k in keys}) != len(keys):
            raise IntegrityError(f"{where}: a key is listed twice")
        return cls(seq, tuple(keys))

    @classmethod
    def from_public_keys(cls, paths: list[str | os.PathLike], sequence: int = 1) -> KeySet:
        """A set of the given PEM public keys, all active."""
        keys = []
        for p in paths:
            path = Path(p)
            if not path.is_file():
                raise NotFound(f"public key {path} does not exist")
            pem = _public_pem(path.read_bytes(), str(path))
            keys.append(Key(hashlib.sha256(pem).hexdigest(), pem.decode()))
        return cls(sequence, tuple({k.id: k for k in keys}.values()))

    @classmethod
    def load(cls, source: str | os.PathLike | KeySet) -> KeySet:
        """A key set from a ``keys.json``, a folder holding one, or one PEM public key."""
        if isinstance(source, KeySet):
            return source
        path = Path(source)
        if path.is_dir():
            path = path / KEYS_FILE
        if not path.is_file():
            raise NotFound(f"no key set or public key at {source}")
        if path.name.endswith(".json"):
            return cls.from_json(path.read_bytes(), str(path))
        return cls.from_public_keys([path])

    def pem_file(self, kid: str) -> Path:
        """The key as a PEM file (model-signing verifies from a path); content-addressed, shared."""
        key = self.get(kid)
        if key is None:
            raise NotFound(f"key {kid[:12]} is not in key set {self.sequence}")
        folder = Path(tempfile.gettempdir()) / f"photoveil-keys-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"{kid}.pub"
        if not path.is_file() or path.read_text() != key.public_key:  # never trust what another wrote there
            tmp = folder / f".{kid}.{os.getpid()}.tmp"
            tmp.write_text(key.public_key)
            os.replace(tmp, path)
        return path


def bundle_key_hint(signature: Path) -> str:
    """The key hint in a model-signing bundle ('' when it has none or is unreadable)."""
    try:
        hint = json.loads(signature.read_text())["verificationMaterial"]["publicKey"]["hint"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return hint if isinstance(hint, str) else ""


def signing_key(folder: Path, keyset: KeySet, what: str) -> Key:
    """The active key of ``keyset`` that a folder's bundle names; refuses revoked and unknown keys."""
    signature = folder / SIGNATURE_FILE
    if not signature.is_file():
        raise IntegrityError(f"{what} is not signed (no {SIGNATURE_FILE})")
    hint = bundle_key_hint(signature)
    key = keyset.get(hint) if hint else None
    if key is None:
        raise IntegrityError(f"{what} refused: it was signed by another key ({hint[:12] or 'no hint'}) than those "
                             f"of the pinned key set {keyset.sequence} ({', '.join(k.short for k in keyset.keys)})")
    if key.status == REVOKED:
        raise IntegrityError(f"{what} refused: it was signed by key {key.short}, revoked in key set "
                             f"{keyset.sequence}")
    return key


def verify_artifact_with(folder: str | os.PathLike, keys: str | os.PathLike | KeySet) -> tuple[Manifest, str]:
    """Verify an artifact folder against a key set (or one PEM): ``(manifest, signer key id)``."""
    from photoveil.signing import verify_artifact

    folder, keyset = Path(folder), KeySet.load(keys)
    key = signing_key(folder, keyset, f"artifact {folder.name!r}")
    return verify_artifact(folder, keyset.pem_file(key.id)), key.id


def _verify_statement_folder(folder: Path, signer: Path) -> None:
    import model_signing

    from photoveil.signing import _hashing_config

    extra = sorted(p.name for p in folder.iterdir() if p.name not in (KEYS_FILE, SIGNATURE_FILE))
    if extra:
        raise IntegrityError(f"key statement {folder.name} holds files besides {KEYS_FILE}: {', '.join(extra)}")
    try:
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=signer) \
            .set_hashing_config(_hashing_config()).verify(folder, folder / SIGNATURE_FILE)
    except Exception as exc:  # noqa: BLE001 - bad bundles raise JSON / protobuf / crypto / ValueError
        raise IntegrityError(f"key statement {folder.name} refused: its signature does not verify "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from None


def check_successor(old: KeySet, new: KeySet) -> None:
    """Rules between consecutive statements: next sequence, revoked stays revoked, one key stays active."""
    if new.sequence != old.sequence + 1:
        raise IntegrityError(f"key set {new.sequence} does not follow key set {old.sequence}")
    for key in old.keys:
        now = new.get(key.id)
        if key.status == REVOKED and (now is None or now.status != REVOKED):
            raise IntegrityError(f"key set {new.sequence} brings back key {key.short}, revoked in {old.sequence}")
    if not new.active():
        raise IntegrityError(f"key set {new.sequence} has no active key")


def verify_statement(folder: str | os.PathLike, pinned: KeySet) -> KeySet:
    """The key set in a statement folder, if a key active in ``pinned`` signed it and it follows ``pinned``."""
    folder = Path(folder)
    new = KeySet.from_json((folder / KEYS_FILE).read_bytes(), f"key statement {folder.name}/{KEYS_FILE}")
    if new.sequence != pinned.sequence + 1:  # checked again once signed; here for the clearer message
        raise IntegrityError(f"key set {new.sequence} does not follow key set {pinned.sequence}; fetch every "
                             f"statement after {pinned.sequence}")
    key = signing_key(folder, pinned, f"key statement {folder.name}")
    _verify_statement_folder(folder, pinned.pem_file(key.id))
    check_successor(pinned, new)
    return new


def advance(pinned: KeySet, statements: list[tuple[bytes, bytes]]) -> KeySet:
    """Walk ``(keys.json, model.sig)`` statements in order from ``pinned``; the newest set they prove.

    Statements at or below ``pinned.sequence`` are skipped; one that does not verify stops
    the walk with IntegrityError (the pinned set is not changed by the caller then).
    """
    with tempfile.TemporaryDirectory(prefix="photoveil-keyset-") as tmp:
        for keys_json, bundle in statements:
            peek = KeySet.from_json(keys_json, "key statement")
            if peek.sequence <= pinned.sequence:
                continue
            folder = Path(tmp) / f"{peek.sequence:06d}"
            folder.mkdir()
            (folder / KEYS_FILE).write_bytes(keys_json)
            (folder / SIGNATURE_FILE).write_bytes(bundle)
            pinned = verify_statement(folder, pinned)
    return pinned


def pinned(shipped: str | os.PathLike | KeySet, folder: str | os.PathLike) -> KeySet:
    """The phone's key set: the one it learned last (``folder/keys.json``), else the one it shipped with."""
    start = KeySet.load(shipped)
    path = Path(folder) / KEYS_FILE
    if path.is_file():
        learned = KeySet.from_json(path.read_bytes(), str(path))
        if learned.sequence >= start.sequence:
            return learned
    return start


def save_pinned(keyset: KeySet, folder: str | os.PathLike) -> Path:
    """Store a verified key set as the phone's pinned one (atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{KEYS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(keyset.to_json())
    os.replace(tmp, folder / KEYS_FILE)
    return folder / KEYS_FILE


class KeyHistory:
    """The provider's statements, ``<folder>/<sequence:06d>/{keys.json, model.sig}``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def sequences(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(p.name) for p in self.folder.iterdir() if p.is_dir() and STATEMENT_DIR.match(p.name))

    def latest(self) -> KeySet | None:
        seqs = self.sequences()
        return self.read(seqs[-1]) if seqs else None

    def read(self, sequence: int) -> KeySet:
        return KeySet.from_json((self.folder / f"{sequence:06d}" / KEYS_FILE).read_bytes(),
                                f"key statement {sequence:06d}")

    def statements(self, since: int = 0) -> list[tuple[int, bytes, bytes]]:
        """``(sequence, keys.json bytes, model.sig bytes)`` after ``since``, oldest first."""
        out = []
        for seq in self.sequences():
            if seq > since:
                folder = self.folder / f"{seq:06d}"
                out.append((seq, (folder / KEYS_FILE).read_bytes(), (folder / SIGNATURE_FILE).read_bytes()))
        return out

    def publish(self, keyset: KeySet, private_key: str | os.PathLike, password: str | None = None) -> Path:
        """Sign ``keyset`` with ``private_key`` and add it as the next statement.

        The first statement may be signed by any key it lists; every later one by a key
        active in the previous statement, and must follow it (:func:`check_successor`).
        """
        import model_signing

        from photoveil.signing import _hashing_config

        previous = self.latest()
        signer = private_key_id(private_key, password)
        trusted = previous if previous is not None else keyset
        key = trusted.get(signer)
        if key is None or key.status != ACTIVE:
            raise InvalidInput(f"{private_key} (key {signer[:12]}) is not an active key of key set "
                               f"{trusted.sequence}; sign with a current key")
        if previous is not None:
            check_successor(previous, keyset)
        elif keyset.sequence != 1 or not keyset.active():
            raise InvalidInput("the first key set must have sequence 1 and an active key")
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{keyset.sequence:06d}"
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=self.folder))
        try:
            (staging / KEYS_FILE).write_text(keyset.to_json())
            model_signing.signing.Config().use_elliptic_key_signer(private_key=Path(private_key), password=password) \
                .set_hashing_config(_hashing_config()).sign(staging, staging / SIGNATURE_FILE)
            if final.exists():
                raise InvalidInput(f"key statement {final} exists; statements are never overwritten")
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def rotated(self, add: list[str | os.PathLike] = (), revoke: list[str] = ()) -> KeySet:
        """The next key set: the latest plus the PEM public keys ``add``, with key ids (or unique
        prefixes of at least 8 hex digits) in ``revoke`` revoked."""
        previous = self.latest()
        if previous is None:
            raise NotFound(f"no key set in {self.folder}; start one with `photoveil artifacts keys init`")
        keys = {k.id: k for k in previous.keys}
        for k in KeySet.from_public_keys(list(add)).keys:
            if k.id in keys:
                raise InvalidInput(f"key {k.short} is already in key set {previous.sequence}")
            keys[k.id] = k
        for prefix in revoke:
            hits = [kid for kid in keys if kid.startswith(prefix.lower())] if len(prefix) >= 8 else []
            if len(hits) != 1:
                raise InvalidInput(f"--revoke {prefix!r} must name one key of key set {previous.sequence} by its id "
                                   f"(>= 8 hex digits): {', '.join(k.short for k in previous.keys)}")
            keys[hits[0]] = dataclasses.replace(keys[hits[0]], status=REVOKED)
        return KeySet(previous.sequence + 1, tuple(keys.values()))
