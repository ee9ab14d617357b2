"""``photoveil artifacts keygen|sign|verify``: the provider's signing key and signed artifacts."""
from __future__ import annotations

import argparse
import json
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("artifacts", help="make signing keys, sign and verify protection artifacts",
                       description="Sign exported artifact folders (.pte + manifest.json) with OpenSSF "
                                   "model-signing (ECDSA P-256, offline) and verify them as a phone would.")
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
    v = s.add_parser("verify", help="verify signed artifact folders against a public key")
    v.add_argument("folders", nargs="+")
    v.add_argument("--public-key", required=True, help="the provider's public key (PEM)")
    v.add_argument("--json", action="store_true", help="one JSON line per folder")
    v.set_defaults(func=_verify)


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
    from photoveil.signing import verify_artifact

    failed = 0
    for folder in args.folders:
        try:
            manifest = verify_artifact(folder, args.public_key)
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
