"""memx's import graph, read from the sources with ast (nothing is imported): every
``import memx.x`` and ``from memx.x import y`` in every module, at module level or inside a
function alike (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "memx"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py")) if "__pycache__" not in p.parts}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The memx modules ``path`` imports. ``from pkg import sub`` counts the submodule pkg.sub
    only (it needs none of pkg's names, so it is safe while pkg itself is being imported)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "memx")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] != "memx":
                continue
            submodules = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}
            found.update(submodules)
            if len(submodules) < len(node.names):  # names of target itself, not only its submodules
                found.add(target)
    return {m for m in found if m in known and m != name}


def module_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(path, known) for name, path in modules.items()}


def layer_of(module: str) -> str:
    """memx.runtimes.base -> runtimes; memx.cli -> cli; memx -> memx."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "memx"


def layer_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, deps in module_graph().items():
        graph.setdefault(layer_of(module), set()).update(layer_of(d) for d in deps if layer_of(d) != layer_of(module))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)
