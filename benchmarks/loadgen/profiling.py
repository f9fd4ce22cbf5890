"""py-spy attached to a running chatd, and its collapsed stacks read back.

:func:`record_profile` records one process (250 samples a second, ``raw``
format: one collapsed stack and its count a line) while the caller's load
runs; :func:`collapsed_samples` reads that file as frames and counts.
"""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import attrs
import trio

__all__ = ["ProfileJob", "collapsed_samples", "find_py_spy", "record_profile", "stack_frames"]


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
