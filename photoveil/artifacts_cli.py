"""``photoveil artifacts keygen|sign|verify|publish|retire|list|keys``: the provider's signing keys,
signed artifacts, their published versions (:mod:`photoveil.catalog`) and key set (:mod:`photoveil.keyset`)."""
from __future__ import annotations

import argparse
import json
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("artifacts", help="signing keys, signed artifacts, published versions, key rotation",
                       description="Sign exported artifact folders (.pte + manifest.json) with OpenSSF "
                                   "model-signing (ECDSA P-256, offline) and verify them as a phone would; "
                                   "publish and retire versions in the server's artifacts folder; rotate and "
                                   "revoke the provider's keys with signed key statements.")
    s = p.add_subparsers(dest="artifacts_command", metavar="ACTION")
    s.required = True
    k = s.add_parser("keygen", help="write a new ECDSA P-256 key pair PREFIX.key / PREFIX.pub")
    k.add_argument("prefix", help="path prefix of the pair, e.g. keys/provider")
    k.add_argument("--password-env", help="environment variable holding a password to encrypt the private key")
    k.add_argument("--force", action="store_true", help="overwrite an existing pair")
    k.set_defaults(func=_keygen)
    g = s.add_parser("sign", help="sign artifact folders in place (writes model.sig into each)")
    g.add_argument("folders", nargs="+", help="artifact folders written by `photoveil export`")
    g.add_argument("--key", required=True, help="private key (PEM) from `photoveil artifacts keygen`")
    g.add_argument("--password-env", help="environment variable holding the private key's password")
    g.set_defaults(func=_sign)
    v = s.add_parser("verify", help="verify signed artifact folders against a public key or key set")
    v.add_argument("folders", nargs="+")
    v.add_argument("--public-key", required=True,
                   help="the provider's public key (PEM), or its key set (keys.json or the folder holding it)")
    v.add_argument("--json", action="store_true", help="one JSON line per folder")
    v.set_defaults(func=_verify)
    _register_versions(s)


def _password(args) -> str | None:
    from photoveil.errors import InvalidInput

    if not args.password_env:
        return None
    value = os.environ.get(args.password_env)
    if not value:
        raise InvalidInput(f"--password-env names ${args.password_env}, which is unset or empty")
    return value


def _keygen(args) -> int:
    from photoveil.signing import keygen

    private, public = keygen(args.prefix, password=_password(args), overwrite=args.force)
    print(f"private key: {private} (keep it secret; never commit it)\npublic key:  {public} (ship it in the app)")
    return 0


def _sign(args) -> int:
    from photoveil.signing import sign_artifact

    password = _password(args)
    for folder in args.folders:
        print(f"signed {folder}: {sign_artifact(folder, args.key, password=password)}")
    return 0


def _verify(args) -> int:
    from photoveil.errors import PhotoveilError
    from photoveil.keyset import verify_artifact_with

    failed = 0
    for folder in args.folders:
        try:
            manifest, _ = verify_artifact_with(folder, args.public_key)
            record = {"folder": folder, "ok": True, "kind": manifest.kind, "model_id": manifest.model_id,
                      "sha256": manifest.sha256}
        except PhotoveilError as exc:
            failed += 1
            record = {"folder": folder, "ok": False, "error": str(exc)}
        if args.json:
            print(json.dumps(record))
        else:
            print(f"{'OK  ' if record['ok'] else 'FAIL'} {folder}: "
                  + (f"{record['kind']} of {record['model_id']}" if record["ok"] else record["error"]))
    return 1 if failed else 0


# -- published versions and the key set ---------------------------------------------------

def _register_versions(s: argparse._SubParsersAction) -> None:
    root_help = "the provider's published folder (the server's artifacts_dir)"
    p = s.add_parser("publish", help="publish an exported folder as a new version (signed; becomes current)")
    p.add_argument("folder", help="artifact folder written by `photoveil export`")
    p.add_argument("--root", required=True, help=root_help)
    p.add_argument("--version", required=True, help="the new version, e.g. 2 or 2025.06-b (never reused)")
    p.add_argument("--id", default="", help="artifact id (default: the folder's name)")
    p.add_argument("--key", required=True, help="private key (PEM); active in the key set if the root has one")
    p.add_argument("--model-version", default="",
                   help="server model version uploads are for (ListModels' version); default: any")
    p.add_argument("--password-env", help="environment variable holding the private key's password")
    p.set_defaults(func=_publish)
    r = s.add_parser("retire", help="stop serving a version (its files stay; uploads from it are refused)")
    r.add_argument("artifact_id")
    r.add_argument("version")
    r.add_argument("--root", required=True, help=root_help)
    r.set_defaults(func=_retire)
    ls = s.add_parser("list", help="the published versions: current, active, retired")
    ls.add_argument("--root", required=True, help=root_help)
    ls.add_argument("--json", action="store_true", help="the catalog as JSON")
    ls.set_defaults(func=_list)
    k = s.add_parser("keys", help="the provider's key set: start it, rotate or revoke keys, show it")
    ks = k.add_subparsers(dest="keys_command", metavar="ACTION")
    ks.required = True
    i = ks.add_parser("init", help="the first key set (sequence 1) of the given public keys")
    r2 = ks.add_parser("rotate", help="the next key set: add keys and/or revoke keys, signed with a current key")
    for q in (i, r2):
        q.add_argument("--root", required=True, help=root_help)
        q.add_argument("--key", required=True, help="private key (PEM) that signs the statement: "
                                                    "one active in the current set (init: one of --add)")
        q.add_argument("--add", action="append", default=[], metavar="PUB", help="public key (PEM) to add")
        q.add_argument("--password-env", help="environment variable holding the private key's password")
    r2.add_argument("--revoke", action="append", default=[], metavar="KEY_ID",
                    help="key id (or a unique prefix of >= 8 hex digits, see `keys show`) to revoke")
    i.set_defaults(func=_keys_init, revoke=[])
    r2.set_defaults(func=_keys_rotate)
    sh = ks.add_parser("show", help="the latest key set")
    sh.add_argument("--root", required=True, help=root_help)
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=_keys_show)


def _root(args):
    """``--root`` as a Path, checked before anything loads."""
    from pathlib import Path

    from photoveil.errors import InvalidInput

    root = Path(args.root)
    if not root.is_dir():
        raise InvalidInput(f"--root {args.root} is not a folder; create the provider's artifacts folder first")
    return root


def _existing(path: str, flag: str) -> str:
    from photoveil.errors import InvalidInput

    if not os.path.isfile(path):
        raise InvalidInput(f"{flag} {path} is not a file")
    return path


def _publish(args) -> int:
    from pathlib import Path

    from photoveil.catalog import check_model_version, check_name, publish
    from photoveil.errors import InvalidInput

    root, folder = _root(args), Path(args.folder)
    if not folder.is_dir():
        raise InvalidInput(f"{args.folder} is not a folder; give the artifact folder `photoveil export` wrote")
    artifact_id = check_name(args.id or folder.resolve().name, "--id")
    check_name(args.version, "--version")
    if args.model_version:
        check_model_version(args.model_version)
    _existing(args.key, "--key")
    record = publish(root, folder, artifact_id, args.version, args.key, password=_password(args),
                     model_version=args.model_version)
    print(f"published {artifact_id} {record.version} (current; signed by key {record.signer[:12]}"
          + (f"; for model version {record.compatible_model_version}" if record.compatible_model_version else "")
          + ")")
    return 0


def _retire(args) -> int:
    from photoveil.catalog import check_name, retire

    root = _root(args)
    check_name(args.artifact_id, "artifact id")
    check_name(args.version, "version")
    entry = retire(root, args.artifact_id, args.version)
    print(f"retired {args.artifact_id} {args.version}; current: {entry.current or 'none (all retired)'}")
    return 0


def _list(args) -> int:
    from photoveil.catalog import read_catalog

    catalog = read_catalog(_root(args))
    if args.json:
        print(catalog.to_json(), end="")
        return 0
    print(f"generation {catalog.generation}")
    rows = [("artifact", "version", "status", "model version", "signer", "published")]
    for entry in catalog.artifacts.values():
        rows += [(entry.artifact_id, v.version, "current" if v.version == entry.current else v.status,
                  v.compatible_model_version or "any", v.signer[:12], v.published) for v in entry.versions]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _keys_args(args):
    from photoveil.catalog import KEYSET_DIR
    from photoveil.errors import InvalidInput
    from photoveil.keyset import KeyHistory

    root = _root(args)
    _existing(args.key, "--key")
    for pub in args.add:
        _existing(pub, "--add")
    for kid in args.revoke:
        if len(kid) < 8 or any(c not in "0123456789abcdefABCDEF" for c in kid):
            raise InvalidInput(f"--revoke {kid[:80]!r} must be a key id or a prefix of >= 8 hex digits")
    return KeyHistory(root / KEYSET_DIR)


def _keys_init(args) -> int:
    from photoveil.errors import InvalidInput
    from photoveil.keyset import KeySet

    history = _keys_args(args)
    if not args.add:
        raise InvalidInput("keys init needs --add PUB for each public key of the first set")
    if history.latest() is not None:
        raise InvalidInput(f"{history.folder} already has key set {history.latest().sequence}; use `keys rotate`")
    return _keys_publish(args, history, KeySet.from_public_keys(args.add))


def _keys_rotate(args) -> int:
    from photoveil.errors import InvalidInput

    history = _keys_args(args)
    if not args.add and not args.revoke:
        raise InvalidInput("keys rotate needs --add PUB and/or --revoke KEY_ID")
    return _keys_publish(args, history, history.rotated(args.add, args.revoke))


def _keys_publish(args, history, keyset) -> int:
    folder = history.publish(keyset, args.key, password=_password(args))
    print(f"key set {keyset.sequence} written to {folder}: "
          + ", ".join(f"{k.short} {k.status}" for k in keyset.keys))
    return 0


def _keys_show(args) -> int:
    from photoveil.catalog import KEYSET_DIR
    from photoveil.errors import NotFound
    from photoveil.keyset import KeyHistory

    history = KeyHistory(_root(args) / KEYSET_DIR)
    latest = history.latest()
    if latest is None:
        raise NotFound(f"no key set in {history.folder}; start one with `photoveil artifacts keys init`")
    if args.json:
        print(latest.to_json(), end="")
        return 0
    print(f"key set {latest.sequence} ({history.folder})")
    for k in latest.keys:
        print(f"{k.id}  {k.status}")
    return 0
