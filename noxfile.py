"""The one entry point for tests, lint, typing and benchmarks.

``nox`` runs tests, lint and typing (what CI runs); ``nox -s bench`` runs the
short benchmarks, ``nox -s bench -- --full`` the full ones.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Every test, unit and end-to-end on real loopback servers (and a real Redis)."""
    _ensure_debian_packages(session)
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "chatd", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "chatd", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[test]", "mypy>=1.11")
    session.run("mypy", "chatd")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks. By default the short versions, in under two minutes: the in-process
    micro-benchmarks, then ``targets.py --quick``, which runs every target of issue 6
    scaled down, including the comparisons the end-to-end scripts own (their own
    reports need ``-- --full`` or running them by hand). ``-- --full`` runs every
    script at full size and then ``targets.py --full`` (about 12 minutes more)."""
    session.install("-e", ".[test,bench]")
    full = "--full" in session.posargs
    micro = (
        "bench_sim.py",
        "bench_client.py",
        "bench_breaker.py",
        "bench_ws_send.py",  # issue 13: a WebSocket message through each server
        "bench_request_cost.py",  # issue 13: what one chat costs, counted
    )
    end_to_end = (
        "bench_pipeline.py",
        "bench_resilience.py",
        "bench_observability.py",
        "load.py",
        "bench_scale.py",  # issue 7: 1 process against 2 on Redis; the cost of a Redis call
    )
    for script in (micro + end_to_end) if full else micro:
        session.run("python", f"benchmarks/{script}", *([] if full else ["--quick"]))
    session.run("python", "benchmarks/targets.py", "--full" if full else "--quick", "--quiet")


# Tests start their own ``redis-server`` and drive the web page in Debian's
# ``chromium`` (Playwright's own browser download is not reachable here).
DEBIAN_PACKAGES = {"redis-server": "redis-server", "chromium": "chromium"}


def _ensure_debian_packages(session: nox.Session) -> None:
    """Install the Debian packages whose commands the tests need, when missing."""
    missing = [package for command, package in DEBIAN_PACKAGES.items() if not shutil.which(command)]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run(*sudo, "apt-get", "update", "-q", external=True, env=env)
    session.run(*sudo, "apt-get", "install", "-y", "-q", *missing, external=True, env=env)
