"""benchmarks/ as CONTRIBUTING.md lays it out: scenarios at the top, their reports
in ``reports/``, what they share and measure with in ``loadgen/``. The library
(``loadgen``, ``reports``, ``machine``) never imports a scenario, and no
benchmark module imports itself back through others."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_layers import assert_no_cycle, imports, modules

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


MODULES = modules(BENCHMARKS, BENCHMARKS)
LIBRARY = ("loadgen", "reports", "machine")
SCENARIOS = {name for name in MODULES if name.split(".")[0] not in LIBRARY}


def test_the_scenarios_are_found() -> None:
    assert {"bench_pipeline", "load", "targets", "loadgen.chat", "reports.pipeline"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(set(MODULES) - SCENARIOS))
def test_the_library_never_imports_a_scenario(module: str) -> None:
    scenarios = sorted(set(imports(MODULES[module], MODULES)) & SCENARIOS)
    assert not scenarios, f"{module} imports the scenario(s) {scenarios}"


def test_no_import_cycle() -> None:
    assert_no_cycle({name: set(imports(path, MODULES)) - {name} for name, path in MODULES.items()})
