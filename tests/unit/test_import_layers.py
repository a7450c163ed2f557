"""The floors of docs/architecture.md, read from the source: no import circle between modules, and no
import running from a lower floor to a higher one (lazy imports inside functions count too)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "raftlog"

# (a module prefix, the prefixes it must never import): docs/architecture.md section 1.
NEVER = [
    ("raftlog.core", ("raftlog.storage", "raftlog.runtime", "raftlog.sim", "raftlog.wire", "raftlog.client",
                      "raftlog.joiner", "raftlog.embed", "raftlog.bench", "raftlog.cli")),
    ("raftlog.storage", ("raftlog.runtime", "raftlog.sim", "raftlog.wire", "raftlog.client", "raftlog.embed",
                         "raftlog.bench", "raftlog.cli")),
    ("raftlog.sim", ("raftlog.storage", "raftlog.runtime", "raftlog.client", "raftlog.embed", "raftlog.bench")),
    ("raftlog.wire", ("raftlog.runtime", "raftlog.client", "raftlog.embed", "raftlog.bench", "raftlog.cli")),
    ("raftlog.runtime", ("raftlog.client", "raftlog.joiner", "raftlog.embed", "raftlog.bench", "raftlog.cli")),
    ("raftlog.client", ("raftlog.runtime", "raftlog.embed", "raftlog.bench", "raftlog.cli")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The raftlog modules `path` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    paths = [p for p in ROOT.rglob("*.py")]
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def test_no_import_circle_between_modules() -> None:
    g = graph()
    # Tarjan's strongly connected components: any component of two or more modules is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            # A package's __init__ importing its own submodules is not a circle between rooms.
            if w not in g:
                continue
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
                circles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not circles, circles


@pytest.mark.parametrize("lower, forbidden", NEVER, ids=[n for n, _ in NEVER])
def test_no_import_runs_up_a_floor(lower: str, forbidden: tuple[str, ...]) -> None:
    wrong = sorted((m, t) for m, targets in graph().items() if m == lower or m.startswith(lower + ".")
                   for t in targets if t.startswith(forbidden))
    assert not wrong, wrong
