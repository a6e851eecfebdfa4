"""The architecture rules of docs/ARCHITECTURE.md, checked on the source so that they cannot erode silently:
layers import one way, no import cycles (lazy imports inside functions included), no module over 600 lines (C++
sources and headers of ``cpp_bindings/`` included), no
model-family or object-kind name switches outside ``models/``, no private names imported across modules."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600
# layer of each subpackage: a module may import its own layer and the ones below, never one above
LAYERS = ("datasets", "models", "training", "export", "runtime", "validation", "benchmarks", "")
_NAMES = r"(mlpf|flashsim|jet|track)"  # registered family and object-kind names
_SWITCH = re.compile(
    rf"""\bfamily\w*\s*(==|!=|\bin\b)\s*\(?["']"""  # family == "mlpf", family in ("mlpf", ...)
    rf"""|["']{_NAMES}["']\s*(==|!=)"""  # "mlpf" == family
    rf"""|(==|!=)\s*["']{_NAMES}["']"""  # x.kind == "jet"
    rf"""|\bin\s*[(\[{{]\s*["']{_NAMES}["']"""  # kind in ("jet", "track")
)


def _package_dirs() -> dict[str, Path]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {pkg: ROOT / folder for pkg, folder in project["tool"]["setuptools"]["package-dir"].items()}


def _modules() -> dict[str, Path]:
    """Every library module, by its import name (each file belongs to its most specific package)."""
    dirs = _package_dirs()
    mods: dict[str, Path] = {}
    for pkg, folder in sorted(dirs.items(), key=lambda kv: -len(kv[0])):
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            rel = rel[:-1] if rel[-1] == "__init__" else rel
            name = ".".join((pkg, *rel))
            if any(path.resolve() == p.resolve() for p in mods.values()):
                continue  # already named through a more specific package
            mods[name] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The library modules ``name`` imports anywhere in its source (TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    part = name.split(".")[1] if name.count(".") else ""
    return LAYERS.index(part if part in LAYERS else "")


def test_the_module_list_is_complete():
    assert "hepzoo.datasets.schema" in MODULES and "hepzoo.runtime.session" in MODULES and "hepzoo.cli" in MODULES
    assert len(MODULES) > 50


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    n = len(MODULES[name].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {n} lines (limit {MAX_LINES}): split it by job"


def _cpp_sources() -> list[Path]:
    """The C++ sources and headers of cpp_bindings/ (not build trees or fetched dependencies: no folder named
    build*, deps or _deps)."""
    out = []
    for path in sorted((ROOT / "cpp_bindings").rglob("*")):
        parts = path.relative_to(ROOT / "cpp_bindings").parts[:-1]
        if path.suffix in (".cpp", ".hpp") and not any(p.startswith("build") or p in ("deps", "_deps") for p in parts):
            out.append(path)
    return out


CPP_SOURCES = _cpp_sources()


def test_the_cpp_source_list_is_complete():
    names = {p.relative_to(ROOT).as_posix() for p in CPP_SOURCES}
    assert {"cpp_bindings/src/session.cpp", "cpp_bindings/include/hepzoo/session.hpp",
            "cpp_bindings/tests/hepzoo_tests.cpp"} <= names
    assert not any("/build" in n or "/deps/" in n for n in names)


@pytest.mark.parametrize("path", CPP_SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_cpp_source_size(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (limit {MAX_LINES}): split it by job"


def test_layers_import_one_way():
    wrong = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets if _layer(b) > _layer(a))
    assert not wrong, f"imports of a higher layer (order {LAYERS}): {wrong}"


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other (directly or through others): {cycles}"


def test_no_family_or_kind_switches_outside_models():
    models = _package_dirs()["hepzoo.models"].resolve()
    hits = []
    for name, path in MODULES.items():
        if models in path.resolve().parents:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0].strip()
            if _SWITCH.search(code) and not code.startswith("for "):  # iterating over names is no switch
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "dispatch through the registered Family / ObjectKind instead:\n" + "\n".join(hits)


def test_no_private_names_imported_across_modules():
    hits = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("hepzoo")):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: {private}")
    assert not hits, f"private names used across modules (make them public or move them): {hits}"


def test_the_rules_catch_what_they_forbid():
    # the checks above must be able to fail: the switch pattern, and the cycle/private checks on known cases
    for line in ('if family == "mlpf":', 'if card.family != "flashsim":', 'if "jet" == kind:', 'kind in ("jet", "x")'):
        assert _SWITCH.search(line), line
    for line in ("if family.elements:", 'name = "mlpf-gnnlsh"', 'label == "particleflow"'):
        assert not _SWITCH.search(line), line
    assert _layer("hepzoo.datasets.io") < _layer("hepzoo.runtime.session") < _layer("hepzoo.cli")


def test_no_test_module_imports_another():
    tests = Path(__file__).resolve().parent
    hits = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            hits += [f"{path.name}:{node.lineno}: {n}" for n in names if n.split(".")[-1].startswith("test_")]
    assert not hits, f"shared test helpers belong in tests/conftest.py (fixtures): {hits}"
