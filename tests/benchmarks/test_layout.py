"""benchmarks/ as CONTRIBUTING.md lays it out: scenarios at the top, their reports
in ``reports/``, what they share and measure with in ``loadgen/``. The library
(``loadgen``, ``reports``, ``machine``) never imports a scenario, and no
benchmark module imports itself back through others."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_layers import assert_no_cycle

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def modules() -> dict[str, Path]:
    found = {}
    for path in BENCHMARKS.rglob("*.py"):
        name = ".".join(path.relative_to(BENCHMARKS).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules()
LIBRARY = ("loadgen", "reports", "machine")
SCENARIOS = {name for name in MODULES if name.split(".")[0] not in LIBRARY}


def imports(path: Path) -> Iterator[str]:
    """The benchmark modules ``path`` imports (``from pkg import module`` names the module)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                name = submodule if submodule in MODULES else node.module
                if name in MODULES:
                    yield name


def test_the_scenarios_are_found() -> None:
    assert {"bench_pipeline", "load", "targets", "loadgen.chat", "reports.pipeline"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(set(MODULES) - SCENARIOS))
def test_the_library_never_imports_a_scenario(module: str) -> None:
    scenarios = sorted(set(imports(MODULES[module])) & SCENARIOS)
    assert not scenarios, f"{module} imports the scenario(s) {scenarios}"


def test_no_import_cycle() -> None:
    assert_no_cycle({name: set(imports(path)) - {name} for name, path in MODULES.items()})
