"""The ``photoveil`` command line.

Each area contributes one subcommand module with ``register(subparsers)``; the module
adds its parser(s) and sets ``func`` to a callable taking the parsed namespace and
returning an exit code. Heavy imports (torch, grpc) happen inside those callables so
``photoveil --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from photoveil import __version__
from photoveil.argparsing import OneLineParser
from photoveil.errors import PhotoveilError

# Subcommand modules in the order `--help` lists them.
SUBCOMMAND_MODULES = (
    "photoveil.models_cli",
    "photoveil.client.protect_cli",
    "photoveil.zoo.cli",
    "photoveil.server.cli",
    "photoveil.server.gallery_cli",
    "photoveil.generator_training.cli",
    "photoveil.evaluation.cli",
    "photoveil.export.cli",
    "photoveil.artifacts_cli",
    "photoveil.demo",
    "photoveil.loadtest",
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="photoveil",
        description="Protect photos on the phone before upload (PMT, FMD, perturbation generator).",
    )
    parser.add_argument("--version", action="version", version=f"photoveil {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except PhotoveilError as exc:
        print(f"photoveil {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
