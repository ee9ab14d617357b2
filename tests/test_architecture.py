"""The package's shape: no import cycles, no upward imports, no production import of test
helpers, one home for the artifact format, short modules (docs/architecture.md)."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import photoveil

# Low to high; a module may import its own layer or lower ones only.
LAYERS = (
    ("photoveil", "photoveil.errors", "photoveil.paths", "photoveil.v1", "photoveil.wire", "photoveil.artifact",
     "photoveil.signing", "photoveil.protogen", "photoveil.imageops", "photoveil.keyset", "photoveil.catalog"),
    ("photoveil.tfjs", "photoveil.nets"),
    ("photoveil.facemodels",),
    ("photoveil.data",),
    ("photoveil.zoo",),
    ("photoveil.client",),
    ("photoveil.export", "photoveil.server", "photoveil.generator_training"),
    ("photoveil.evaluation",),
    ("photoveil.__main__", "photoveil.demo", "photoveil.loadtest", "photoveil.cli", "photoveil.models_cli", "photoveil.artifacts_cli"),
)
GENERATED = "photoveil.v1"
TEST_HELPERS = ("photoveil.server.testing",)  # fixtures for the tests, not for the product
MAX_LINES = 600


MAPPED = ("client", "server", "export", "generator_training")  # folders installed as photoveil.<name>


def _modules() -> dict[str, Path]:
    """Every module of the installed package -> its source file."""
    out = {"photoveil": Path(photoveil.__file__)}
    roots = [(photoveil.__path__, "photoveil.")]
    for name in MAPPED:  # an editable install maps these folders in: walk them explicitly
        pkg = importlib.import_module(f"photoveil.{name}")
        out[pkg.__name__] = Path(pkg.__file__)
        roots.append((pkg.__path__, f"photoveil.{name}."))
    for path, prefix in roots:
        for info in pkgutil.walk_packages(path, prefix):
            spec = importlib.util.find_spec(info.name)
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                out[info.name] = Path(spec.origin)
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """photoveil modules ``name`` imports anywhere in its body (function-local included,
    ``TYPE_CHECKING`` blocks too: they are still a dependency of the code)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:  # `from pkg import name`: the module is pkg
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    best, rank = -1, 0
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    return rank


def test_graph_covers_the_package():
    assert {"photoveil.client.protect.pmt", "photoveil.server.servicer", "photoveil.export.lowering",
            "photoveil.artifact"} <= set(GRAPH)
    assert "photoveil.client.protect.base" in GRAPH["photoveil.client.protect.pmt"]


def test_no_import_cycles():
    """Tarjan's strongly connected components over the module graph: every one is a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            # a package's __init__ re-exporting its submodules is not a cycle of the code
            if w not in GRAPH or v.startswith(w + "."):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_point_down():
    upward = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                    if not m.startswith(GENERATED) and _layer(t) > _layer(m))
    assert not upward, "upward imports (see LAYERS / docs/architecture.md):\n" + "\n".join(upward)


def test_no_production_import_of_test_helpers():
    bad = sorted(m for m, targets in GRAPH.items() if set(targets) & set(TEST_HELPERS))
    assert not bad, f"production modules importing test helpers: {bad}"


def test_manifest_file_name_has_one_home():
    holders = sorted(m for m, p in MODULES.items() if '"manifest.json"' in p.read_text(encoding="utf-8"))
    assert holders == ["photoveil.artifact"], holders


@pytest.mark.parametrize("name", sorted(m for m in MODULES if not m.startswith(GENERATED)))
def test_module_is_short(name):
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines (max {MAX_LINES}): split it by concern"
