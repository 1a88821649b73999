"""Layering: no import cycle among the project's modules (function-local imports included), none between its
packages (a package's modules taken together; each top-level module of `factory` on its own), every module
imports on its own, the stage CLI starts without torch, and no module is over 350 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("factory", "tokenizer")
MAX_LINES = 350


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `path` imports anywhere in its body (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(n for n in names if n in modules)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_even_through_function_local_imports():
    modules = _modules()
    # A package imports its own modules only through its __init__, which is a one-line docstring here.
    graph = {name: {m for m in _imports(path, modules) if m != name and not name.startswith(m + ".")}
             for name, path in modules.items()}
    assert _cycles(graph) == []


def _package(module: str) -> str:
    """`factory.train.loop` -> `factory.train`; `factory.io` -> itself; `tokenizer.x` -> `tokenizer`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "factory" else parts[0]


def test_no_import_cycles_between_packages():
    """A file-level test cannot see a knot like train -> launch -> registry -> train made of acyclic files."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph.setdefault(_package(name), set()).update(
            _package(m) for m in _imports(path, modules) if _package(m) != _package(name))
    assert _cycles(graph) == []


def test_the_package_graph_check_finds_a_knot():
    assert _cycles({"factory.train": {"factory.launch"}, "factory.launch": {"factory.registry"},
                    "factory.registry": {"factory.train"}, "factory.io": set()}) == [
        ["factory.launch", "factory.registry", "factory.train"]]


def test_no_module_is_over_the_line_limit():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_every_module_imports_in_a_fresh_interpreter_in_either_order(order):
    names = sorted(_modules())
    names = names if order == "sorted" else names[::-1]
    code = "import importlib\nfor name in %r:\n    importlib.import_module(name)" % names
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_stage_cli_starts_without_torch():
    code = "import sys, factory.stage, factory.pipeline; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
