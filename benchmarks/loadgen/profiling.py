"""py-spy attached to a running chatd, and its collapsed stacks read back.

:func:`record_profile` records one process (250 samples a second, ``raw``
format: one collapsed stack and its count a line) while the caller's load
runs; :func:`collapsed_samples` reads that file as frames and counts,
:func:`busy_stacks` without trio's idle worker threads. :func:`area_shares`
and :func:`summarise_profile` say where the time went, :func:`profile_section`
puts that in a report.
"""

from __future__ import annotations

import collections
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from loadgen.script import ROOT

__all__ = [
    "PY_SPY_MISSING",
    "ProfileJob",
    "area_shares",
    "busy_stacks",
    "collapsed_samples",
    "find_py_spy",
    "profile_section",
    "record_profile",
    "stack_frames",
    "summarise_profile",
]

PY_SPY_MISSING = "py-spy is not installed (pip install py-spy)"
Frames = list[tuple[str, str]]


def find_py_spy() -> str | None:
    """py-spy's path (on PATH or beside this Python), or None if it is not installed."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return py_spy if Path(py_spy).exists() else None


@attrs.frozen
class ProfileJob:
    """Where py-spy is and where its output goes."""

    py_spy: str
    out: Path
    log: Path


async def record_profile(
    job: ProfileJob, pid: int, load: Callable[[], Awaitable[None]]
) -> int | None:
    """Run ``load`` with py-spy recording process ``pid`` into ``job.out``; py-spy's exit
    status (None if it would not end)."""
    command = [job.py_spy, "record", "--pid", str(pid), "--rate", "250",
               "--format", "raw", "--output", str(job.out)]  # fmt: skip
    with open(job.log, "wb") as log:  # noqa: ASYNC230 - a local file, opened once
        spy = await trio.lowlevel.open_process(command, stdout=log, stderr=log)
    try:
        await trio.sleep(1.0)  # py-spy attaches
        await load()
    finally:
        with trio.move_on_after(30) as waited:
            waited.shield = True
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            await spy.wait()
        if spy.returncode is None:
            spy.kill()
            with trio.move_on_after(5) as reaped:
                reaped.shield = True
                await spy.wait()
    return spy.returncode


def stack_frames(stack: str) -> Iterator[tuple[str, str]]:
    """(function, file) of each frame of a collapsed stack, outermost first."""
    for frame in stack.split(";"):
        name, _, where = frame.partition(" (")
        yield name, where.rsplit(":", 1)[0]


def collapsed_samples(raw: Path) -> Iterator[tuple[list[tuple[str, str]], int]]:
    """(frames, samples) of each stack in py-spy's raw output, outermost frame first."""
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            yield list(stack_frames(stack)), int(count_text)


def busy_stacks(raw: Path) -> tuple[list[tuple[Frames, int]], int]:
    """(frames, samples) of each stack in py-spy's raw output but those of trio's idle worker
    threads (waiting for a job in ``WorkerThread._work``, which py-spy does not always see
    as idle), and how many samples those were."""
    stacks, idle = [], 0
    for frames, count in collapsed_samples(raw):
        if frames[-1][0] == "WorkerThread._work":
            idle += count
        else:
            stacks.append((frames, count))
    return stacks, idle


def area_shares(raw: Path, areas: Mapping[str, Callable[[Frames], bool]]) -> dict[str, Any]:
    """The busy samples, and the share of them (%) with frames that each area holds."""
    stacks, _idle = busy_stacks(raw)
    total = sum(count for _, count in stacks)
    counts = {
        area: sum(n for frames, n in stacks if holds(frames)) for area, holds in areas.items()
    }
    return {
        "samples": total,
        "pct": {area: round(counts[area] / max(1, total) * 100, 2) for area in areas},
    }


def library(path: str) -> str:
    """Which library (or chatd subpackage) a frame's file belongs to.

    py-spy names files relative to their sys.path entry: ``trio/_core/_run.py``,
    ``chatd/llm/client.py``; a bare ``contextlib.py`` is the standard library.
    """
    parts = path.split("/")
    if parts[0] == "chatd" and len(parts) > 2:
        return "chatd." + parts[1]
    if len(parts) > 1 and parts[0]:
        return parts[0]
    return "stdlib"


def summarise_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self time by library and by function, and inclusive time by function, as shares (%)
    of the busy samples (:func:`busy_stacks`): the ``top`` of each."""
    by_library: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    stacks, idle = busy_stacks(raw)
    total = sum(count for _, count in stacks)
    for frames, count in stacks:
        name, path = frames[-1]
        by_library[library(path)] += count
        self_time[f"{name} ({path})"] += count
        for key in {f"{n} ({p})" for n, p in frames}:
            inclusive[key] += count

    def share(counter: collections.Counter[str]) -> list[list[Any]]:
        return [[k, round(v / max(1, total) * 100, 1)] for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "idle_worker_thread_samples_left_out": idle,
        "self_by_area_pct": share(by_library),
        "self_by_function_pct": share(self_time),
        "inclusive_by_function_pct": share(inclusive),
        "raw_file": str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else str(raw),
    }


def profile_section(
    profile: Mapping[str, Any] | None,
    skipped_heading: str,
    render: Callable[[Mapping[str, Any]], str],
) -> str:
    """A report's profile section: nothing without a profile, ``Skipped: why`` under
    ``skipped_heading`` if there is none to show, else ``render(profile)``."""
    if not profile:
        return ""
    if "skipped" in profile:
        return f"\n{skipped_heading}\n\nSkipped: {profile['skipped']}\n"
    return render(profile)
