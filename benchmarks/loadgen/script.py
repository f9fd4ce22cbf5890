"""What every benchmark script does around its measurements.

Its command line (:func:`script_parser`), which chatd it measured
(:func:`provenance`), the record its results file opens and closes with
(:class:`RunRecord`), and its report's opening (:func:`report_opening`) and tables
(:func:`markdown_table`).
It imports no benchmark script, so ``bench_pipeline.py`` uses it too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from machine import describe_machine

__all__ = [
    "RunRecord",
    "markdown_table",
    "provenance",
    "provenance_markdown",
    "report_opening",
    "script_parser",
]


ROOT = Path(__file__).resolve().parents[2]
"""The repository: the chatd a benchmark runs unless told otherwise."""


def script_parser(
    doc: str | None, quick_help: str, chatd_path: bool = False
) -> argparse.ArgumentParser:
    """A parser that shows the script's docstring ``doc`` as written, with its ``--quick``
    and, if ``chatd_path``, a ``--chatd-path`` to run another chatd source tree."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if chatd_path:
        why = "e.g. to compare a change against a checkout of the commit before it"
        text = f"run chatd from this source tree (default: this repository), {why}"
        parser.add_argument("--chatd-path", type=Path, default=ROOT, help=text)
    return parser


def provenance(chatd_path: Path) -> dict[str, Any]:
    """Which chatd was measured: its directory, git commit and uncommitted files."""
    info: dict[str, Any] = {"chatd_path": str(chatd_path), "git_head": None}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(chatd_path), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    if head:
        info["git_head"] = head.strip()
        status = git("status", "--porcelain", "--", "chatd") or ""
        info["chatd_uncommitted_files"] = [line[3:] for line in status.splitlines()]
    return info


def provenance_markdown(source: Mapping[str, Any]) -> str:
    """:func:`provenance` in words: "chatd from `PATH` at git HEAD, with uncommitted …"."""
    changed = source.get("chatd_uncommitted_files") or []
    return (
        f"chatd from `{source['chatd_path']}`"
        + (f" at git {source['git_head']}" if source["git_head"] else "")
        + (f", with uncommitted changes to {', '.join(changed)}" if changed else "")
    )


def report_opening(title: str, result: Mapping[str, Any]) -> str:
    """A report's heading, ``# title``, and the sentence its text opens with: the command,
    the seconds it took and which chatd it measured ("`COMMAND` (N s); chatd from `PATH`….")."""
    return (
        f"# {title}\n\n`{result['command']}` ({result['elapsed_s']} s); "
        f"{provenance_markdown(result['chatd'])}."
    )


@attrs.frozen
class RunRecord:
    """How a benchmark run was started, which chatd it measured, on what machine, and when."""

    command: str
    chatd: dict[str, Any]
    machine: dict[str, Any]
    started: float

    @classmethod
    def start(cls, script: str, chatd_path: Path) -> RunRecord:
        """Note the command line of ``script``, chatd's provenance and the machine, and
        start the clock."""
        command = " ".join([f"python benchmarks/{Path(script).name}", *sys.argv[1:]])
        return cls(command, provenance(chatd_path), describe_machine(), time.perf_counter())

    def result(
        self,
        benchmark: str,
        params: Any,
        measured: Mapping[str, Any],
        loadavg_at_end: bool = False,
        params_key: str = "params",
    ) -> dict[str, Any]:
        """A results file's object: ``benchmark``, the command, ``params`` (attrs) under
        ``params_key``, chatd, ``measured``, the seconds taken (and the load average now)
        and the machine."""
        result = {
            "benchmark": benchmark,
            "command": self.command,
            params_key: attrs.asdict(params),
            "chatd": self.chatd,
            **measured,
            "elapsed_s": round(time.perf_counter() - self.started, 1),
        }
        if loadavg_at_end:
            result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        result["machine"] = self.machine
        return result


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: the header, its rule, then a line a row (no newline at the end)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
