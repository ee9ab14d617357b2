"""Regenerate the gRPC/protobuf stubs in ``photoveil/v1`` from ``proto/photoveil/v1``.

The one documented command (run from a checkout)::

    python -m photoveil.protogen          # write photoveil/v1/*_pb2{,_grpc}.py and *_pb2.pyi
    python -m photoveil.protogen --check  # exit 1 when the committed stubs are stale

Stubs are generated with ``-I proto`` so they import each other as
``from photoveil.v1 import tensor_pb2``. The output depends on the grpcio-tools
version, so regenerate after upgrading it; ``--check`` ignores only the
``GRPC_GENERATED_VERSION`` stamp of the ``_grpc`` stubs (the oldest grpcio runtime they
accept), so a newer grpcio-tools patch release that generates the same code does not make the
committed stubs stale, nor force their runtime floor up.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
PROTO_DIR = PROTO_ROOT / "photoveil" / "v1"
STUB_DIR = REPO / "photoveil" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
_VERSION_STAMP = re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.MULTILINE)


def _same_code(a: Path, b: Path) -> bool:
    """Equal stubs up to the grpcio-tools version stamp."""
    return _VERSION_STAMP.sub("", a.read_text()) == _VERSION_STAMP.sub("", b.read_text())


def proto_files() -> list[Path]:
    if not PROTO_DIR.is_dir():
        raise FileNotFoundError(f"no proto sources at {PROTO_DIR}: run from a photoveil checkout")
    return sorted(PROTO_DIR.glob("*.proto"))


def _generated(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(directory.iterdir()) if p.name.endswith(GENERATED_SUFFIXES)}


def generate(out_root: Path) -> list[Path]:
    """Run protoc into ``out_root`` (stubs land in ``out_root/photoveil/v1``); return the stub paths."""
    from grpc_tools import protoc
    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")  # google/protobuf/*.proto
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    # protoc resolves the relative proto names against -I, independent of the cwd.
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")
    return list(_generated(out_root / "photoveil" / "v1").values())


def write() -> list[Path]:
    """Regenerate the committed stubs in place (stale generated files are removed)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        STUB_DIR.mkdir(parents=True, exist_ok=True)
        for old in _generated(STUB_DIR).values():
            old.unlink()
        written = []
        for path in fresh:
            written.append(Path(shutil.copy2(path, STUB_DIR / path.name)))
    init = STUB_DIR / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated gRPC/protobuf stubs (python -m photoveil.protogen)."""\n')
    return written


def check() -> list[str]:
    """Differences between the committed stubs and freshly generated ones (empty: up to date)."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = _generated(Path(tmp) / "photoveil" / "v1")
        committed = _generated(STUB_DIR) if STUB_DIR.is_dir() else {}
        for name in sorted(set(fresh) | set(committed)):
            if name not in committed:
                problems.append(f"missing: photoveil/v1/{name}")
            elif name not in fresh:
                problems.append(f"stale (no proto generates it): photoveil/v1/{name}")
            elif not _same_code(fresh[name], committed[name]):
                problems.append(f"out of date: photoveil/v1/{name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m photoveil.protogen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale stubs (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("stubs are stale: run `python -m photoveil.protogen`", file=sys.stderr)
            return 1
        print("stubs are up to date")
        return 0
    for path in write():
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
