"""The one rule of the layout, checked from the source: `scanner` and `catalog` import neither each other nor
`cluster`; `cluster` (the service layer) composes them; `words` (the shared vocabulary) imports none of the
three, and all of them may import it. No import circle among the project's modules either,
counting imports inside functions: a circle that only a lazy import hides is still a circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("words", "scanner", "catalog", "cluster")
FORBIDDEN = {"words": {"scanner", "catalog", "cluster"}, "scanner": {"catalog", "cluster"},
             "catalog": {"scanner", "cluster"}, "cluster": set()}


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages under `root`."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def imports(name: str, file: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (anywhere in the file), resolved to module names."""
    is_pkg = file.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `from pkg import name` names a module or something inside one
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    mods = modules(root)
    return {m: imports(m, f, set(mods)) for m, f in mods.items()}


def violations(g: dict[str, set[str]]) -> list[str]:
    out = []
    for m, deps in sorted(g.items()):
        pkg = m.split(".")[0]
        for d in sorted(deps):
            if d.split(".")[0] in FORBIDDEN[pkg]:
                out.append(f"{m} imports {d}")
    return out


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each once (found by depth-first search; a package imports its own modules
    through its __init__ only if that file says so)."""
    found, seen = [], set()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cyc = stack[stack.index(d):]
                key = frozenset(cyc)
                if key not in seen:
                    seen.add(key)
                    found.append(cyc + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    return found
