"""Signed protection artifacts: OpenSSF ``model-signing`` with an ECDSA P-256 key, offline.

The provider signs an artifact folder (one ``.pte`` and its manifest, see
:mod:`photoveil.artifact`) with its private key; the signature bundle ``model.sig`` lands inside the folder and covers every
other file in it. The phone holds only the provider's public key and calls
:func:`verify_artifact` before it loads anything:

* the bundle must be there (an unsigned folder is refused),
* it must be made by the key the phone trusts (a wrongly-signed folder is refused),
* every file's hash must match the signed manifest, with no file missing or added,
* and the manifest's own ``sha256`` must name the ``.pte`` that is there.

Example::

    >>> keygen("keys/provider")                        # keys/provider.key + keys/provider.pub
    >>> sign_artifact("artifacts/pmt-step", "keys/provider.key")
    >>> verify_artifact("artifacts/pmt-step", "keys/provider.pub")   # raises IntegrityError if not
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from photoveil.artifact import MANIFEST_FILE, SIGNATURE_FILE, Manifest, open_artifact, verify_hash
from photoveil.errors import IntegrityError, InvalidInput, NotFound

__all__ = ["SIGNATURE_FILE", "keygen", "sign_artifact", "verify_artifact"]


def _hashing_config():
    import model_signing

    # The bundle lives inside the folder it signs, so it must not hash itself; nothing else
    # is ignored (not even .gitignore & co.): every file the server serves is covered.
    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


def keygen(prefix: str | os.PathLike, password: str | None = None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new ECDSA P-256 key pair as ``<prefix>.key`` (PKCS#8 PEM, mode 0600) and
    ``<prefix>.pub`` (SubjectPublicKeyInfo PEM); return both paths."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    prefix = Path(prefix)
    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for path in (private, public):
        if path.exists() and not overwrite:
            raise InvalidInput(f"{path} exists; refusing to overwrite a key (pass overwrite / --force)")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _key_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{what} {path} does not exist; make a pair with `photoveil artifacts keygen`")
    return path


def sign_artifact(folder: str | os.PathLike, private_key: str | os.PathLike, password: str | None = None) -> Path:
    """Sign an artifact folder in place; returns the path of its ``model.sig``.

    The manifest's sha256 must match the .pte first: a signature over an inconsistent
    folder would only move the error to every phone.
    """
    import model_signing

    folder = Path(folder)
    art = open_artifact(folder, strict=True)
    pte, manifest = art.pte, art.manifest
    verify_hash(pte, manifest)
    key = _key_file(private_key, "private key")
    extra = sorted(p.name for p in folder.iterdir() if p.name not in (pte.name, MANIFEST_FILE, SIGNATURE_FILE))
    if extra:
        raise InvalidInput(f"{folder} holds files besides the program and manifest ({', '.join(extra)}); "
                           "remove them: the signature covers the whole folder")
    signature = folder / SIGNATURE_FILE
    tmp = folder.parent / f".{folder.name}.sig.tmp"
    try:
        model_signing.signing.Config().use_elliptic_key_signer(private_key=key, password=password) \
            .set_hashing_config(_hashing_config()).sign(folder, tmp)
    except (ValueError, TypeError) as exc:
        tmp.unlink(missing_ok=True)
        raise InvalidInput(f"cannot sign with {key}: {exc} (an ECDSA P-256 PEM private key is accepted)") from None
    os.replace(tmp, signature)
    return signature


def verify_artifact(folder: str | os.PathLike, public_key: str | os.PathLike) -> Manifest:
    """Verify a signed artifact folder against the provider's public key; return its manifest.

    Raises:
        IntegrityError: unsigned, signed by another key, a file changed / missing / added,
            or the manifest does not name the .pte that is there.
        NotFound: the folder or the key file does not exist.
    """
    import model_signing

    folder = Path(folder)
    art = open_artifact(folder, strict=True)
    pte, manifest = art.pte, art.manifest
    key = _key_file(public_key, "public key")
    signature = folder / SIGNATURE_FILE
    if not signature.is_file():
        raise IntegrityError(f"{folder} is not signed (no {SIGNATURE_FILE}); refusing to load an unsigned artifact")
    try:
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key) \
            .set_hashing_config(_hashing_config()).verify(folder, signature)
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"artifact {folder.name!r} refused: {SIGNATURE_FILE} is not a valid signature bundle "
                             f"({exc})") from None
    except ValueError as exc:
        text = str(exc)
        if "Key mismatch" in text:
            reason = f"it was signed by another key than {key.name}"
        elif "mismatch" in text.lower() or "Extra files" in text or "missing" in text.lower():
            changed = re.findall(r"Hash mismatch for \\?'([^'\\]+)\\?'", text)
            detail = (f"{', '.join(changed)} changed" if changed else text[:300])
            reason = f"its contents differ from what was signed ({detail})"
        else:
            reason = f"the signature does not verify ({text[:300]})"
        raise IntegrityError(f"artifact {folder.name!r} refused: {reason}") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt bundle raises JSON / protobuf / crypto errors
        raise IntegrityError(f"artifact {folder.name!r} refused: {SIGNATURE_FILE} is not a valid signature bundle "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from None
    verify_hash(pte, manifest)
    return manifest
