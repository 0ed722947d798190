"""The package layers: each package imports only the ones below it (LAYERS), and no module imports itself back
through others. Every import counts, also those inside functions: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "warmstart"

# What each unit may import besides itself (a unit is a package, or a top-level module). The root package
# `warmstart` (its lazy exports and __version__) imports nothing at import time and may be imported by all.
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "core": {"errors"},
    "engines": {"errors", "core"},
    "security": {"errors", "core"},
    "cache": {"errors", "core", "engines", "security"},
    "runtime": {"errors", "core", "engines"},
    "restore": {"errors", "core", "engines", "security", "cache", "runtime"},
    "snapshot": {"errors", "core", "engines", "security", "cache", "runtime", "restore"},
    "migrate": {"errors", "core", "engines", "security", "cache", "runtime", "restore", "snapshot"},
    "serve": {"errors", "core", "engines", "security", "cache", "runtime", "restore", "snapshot", "migrate"},
    "ha": {"errors", "core", "engines", "security", "cache", "runtime", "restore", "snapshot"},
    "doctor": {"errors", "core", "engines", "security", "cache", "runtime", "restore", "snapshot", "migrate"},
    "entrypoint": set(),
    "cli": {"errors", "core", "engines", "security", "cache", "runtime", "restore", "snapshot", "serve", "migrate",
            "ha", "doctor", "entrypoint"},
    "__main__": {"cli"},
}


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("warmstart", *path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The warmstart modules `name` imports (`from pkg import mod` counts as importing pkg.mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("warmstart"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *([base] if base
                                                                                                   else [])])
            if base.startswith("warmstart"):
                for alias in node.names:
                    yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "warmstart"


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {dep for dep in imports(name, path, known) if dep != name} for name, path in known.items()}


def test_every_package_and_top_level_module_has_a_layer() -> None:
    units = {unit(m) for m in modules()} - {"warmstart"}
    assert units == set(LAYERS), f"add new packages to LAYERS: {sorted(units ^ set(LAYERS))}"


def test_packages_import_only_the_layers_below_them() -> None:
    wrong = sorted(f"{name} imports {dep}" for name, deps in graph().items() for dep in deps
                   if unit(dep) not in {unit(name), "warmstart"} | LAYERS.get(unit(name), set()))
    assert wrong == []


def test_the_layers_themselves_form_no_cycle() -> None:
    def below(u: str, seen: frozenset[str] = frozenset()) -> None:
        assert u not in seen, f"layer cycle through {u}"
        for dep in LAYERS[u]:
            below(dep, seen | {u})

    for u in LAYERS:
        below(u)


def test_no_module_imports_itself_back_through_others() -> None:
    edges = graph()
    done: set[str] = set()
    cycles: list[str] = []

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            cycles.append(" -> ".join([*stack[stack.index(name):], name]))
            return
        if name in done:
            return
        for dep in sorted(edges.get(name, ())):
            if dep != "warmstart":  # the root imports nothing at import time
                visit(dep, [*stack, name])
        done.add(name)

    for name in sorted(edges):
        visit(name, [])
    assert cycles == []


def test_package_docstrings_say_what_they_own_and_may_import() -> None:
    for init in ROOT.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init.relative_to(ROOT.parent)}: its docstring says what it may import"
