"""The import structure CONTRIBUTING.md describes: each package imports only
from its own layer and those below, and no import cycle (not even through an
import inside a function or under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "chatd"

LAYERS = {
    "cli": 7,
    "testing": 7,
    "testing_redis": 7,
    "__main__": 7,
    "server": 6,
    "pipeline": 5,
    "tools": 4,
    "stores": 3,
    "llm": 2,
    "resilience": 2,
    "observability": 2,
    "config": 1,
    "exceptions": 0,
    "redaction": 0,
    "ticks": 0,
    "data": 0,
    "trio_websocket_compat": 0,
}
"""The part of ``chatd`` a module is in (its first name under ``chatd``), and its layer."""


def modules(root: Path, base: Path) -> dict[str, Path]:
    """The modules under ``root`` by their dotted names, as imported from ``base``."""
    found = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(base).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules(PACKAGE, PACKAGE.parent)


def imports(path: Path, known: Mapping[str, Path] = MODULES) -> Iterator[str]:
    """The ``known`` modules ``path`` imports (``from pkg import module`` names the
    module), wherever the import is: in a function or under TYPE_CHECKING too."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                name = submodule if submodule in known else node.module
                if name in known:
                    yield name


def part(module: str) -> str:
    names = module.split(".")
    return names[1] if len(names) > 1 else ""


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module: str) -> None:
    own = part(module)
    if not own:
        return  # chatd/__init__.py
    assert own in LAYERS, f"{module}: add its package to LAYERS (and CONTRIBUTING.md)"
    for imported in imports(MODULES[module]):
        other = part(imported)
        if other in ("", own):
            continue
        assert LAYERS[other] < LAYERS[own] or (own, other) in {("__main__", "cli")}, (
            f"{module} (layer {LAYERS[own]}) imports {imported} (layer {LAYERS[other]})"
        )


def test_no_import_cycle() -> None:
    graph = {
        name: {m for m in imports(path) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }
    assert_no_cycle(graph)


def assert_no_cycle(graph: Mapping[str, set[str]]) -> None:
    """Fail naming the first cycle in ``graph`` (module: the modules it imports)."""
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(name) :], name]))
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


ROOT = PACKAGE.parent


@pytest.mark.parametrize("tree", ["chatd", "tests", "benchmarks"])
def test_no_module_over_400_lines(tree: str) -> None:
    """A module over ~400 lines is asking to be split (style.md): none in the
    package, its tests or its benchmarks."""
    sizes = {
        p: len(p.read_text(encoding="utf-8").splitlines()) for p in (ROOT / tree).rglob("*.py")
    }
    assert not {str(p.relative_to(ROOT)): n for p, n in sizes.items() if n > 400}
