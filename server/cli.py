"""``photoveil serve --config FILE``: run the provider's gRPC server."""
from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("serve", help="run the provider's gRPC recognition/artifact server",
                            description="Run the gRPC server described by a TOML or JSON config "
                                        "(see docs/server.md). Stops gracefully on SIGTERM/SIGINT.")
    parser.add_argument("--config", required=True, metavar="FILE", help="server config (.toml or .json)")
    parser.add_argument("--bind", metavar="HOST:PORT", help="override the config's bind address")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from photoveil.server.app import serve
    from photoveil.server.config import load_config

    config = load_config(args.config)
    if args.bind:
        config.bind = args.bind
        config.__post_init__()
    return serve(config)


def main(argv: list[str] | None = None) -> int:
    """``python -m photoveil.server.cli serve --config FILE``: the same command without the other subcommands."""
    import logging
    import sys

    from photoveil.argparsing import OneLineParser
    from photoveil.errors import PhotoveilError

    parser = OneLineParser(prog="photoveil")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except PhotoveilError as exc:
        print(f"photoveil serve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
