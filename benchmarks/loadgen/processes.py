"""chatd, the simulated LLM and helper scripts as subprocesses of a benchmark.

:func:`spawn_process` starts one with its output in a log file, killed when
the caller's exit stack closes; :func:`wait_for_url` waits for its first JSON
log line with a ``url`` (what it listens on). Its CPU comes from /proc/PID/stat, its JSON log
lines from the file, and the file's tail goes to stderr when a run fails
(:func:`log_tails_on_failure`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson

__all__ = [
    "Process",
    "clean_env",
    "log_tails_on_failure",
    "pid_cpu_seconds",
    "proc_stat",
    "spawn_process",
    "start_chatd",
    "start_sim",
    "wait_for_url",
]


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (the state is ``[0]``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()


def pid_cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid``, in seconds."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@attrs.define
class Process:
    """A chatd or simulator subprocess, its log file and its listening line."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    listening: dict[str, Any] = attrs.field(factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the process, in seconds."""
        return pid_cpu_seconds(self.pid)

    def status_kib(self, field: str) -> int:
        """A ``kB`` field of its ``/proc/PID/status`` (``VmRSS``, ``VmHWM``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def rss_kib(self) -> int:
        """Its resident set (VmRSS), in KiB."""
        return self.status_kib("VmRSS")

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON objects among its log's lines so far."""
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def log_events(self, levels: Collection[str] = ("warning", "error")) -> Counter[str]:
        """Its JSON log lines at one of ``levels``, counted by event."""
        records = self.log_records()
        return Counter(str(r.get("event")) for r in records if r.get("level") in levels)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_running(self) -> None:
        """Raise, with its log's tail, if it has exited."""
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}"
            )

    def kill(self) -> None:
        """Kill it and reap it; harmless if it already exited."""
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


def clean_env(chatd_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any CHATD_ setting, importing chatd
    from ``chatd_path``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    env["PYTHONPATH"] = str(chatd_path)
    env.update(extra)
    return env


def spawn_process(
    name: str,
    args: Sequence[str],
    workdir: Path,
    env: Mapping[str, str],
    stack: contextlib.ExitStack,
    script: Path | None = None,
) -> Process:
    """Start ``python -m chatd ARGS`` (or ``python SCRIPT ARGS``) in ``workdir``, logging to
    ``NAME.log`` there (a pipe left unread could fill and stall it); killed when ``stack``
    closes."""
    log_path = workdir / f"{name}.log"
    program = [str(script)] if script is not None else ["-m", "chatd"]
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            [sys.executable, *program, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=dict(env),
        )
    process = Process(name, popen, log_path)
    stack.callback(process.kill)
    return process


def wait_for_url(process: Process, timeout_s: float = 30.0) -> Process:
    """Wait for the process's JSON log line with a ``url`` (what it listens on), kept as its
    ``listening``; raise, with its log's tail, if it exits or prints none in ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in process.log_records():
            if "url" in record:
                process.listening = record
                return process
        process.check_running()
        time.sleep(0.05)
    raise RuntimeError(
        f"{process.name} printed no listening line in {timeout_s:g} s:\n{process.log_tail()}"
    )


def start_sim(
    workdir: Path,
    chatd_path: Path,
    ttft_ms: float,
    tokens_per_s: float,
    stack: contextlib.ExitStack,
    name: str = "sim",
    extra: Sequence[str] = (),
) -> Process:
    """Start ``chatd sim-llm`` on a free port at the given timing, with ``extra`` arguments,
    and wait for its URL (see :func:`spawn_process`, :func:`wait_for_url`)."""
    args = ["sim-llm", "--port", "0", "--ttft-ms", f"{ttft_ms:g}",
            "--tokens-per-s", f"{tokens_per_s:g}", *extra]  # fmt: skip
    return wait_for_url(spawn_process(name, args, workdir, clean_env(chatd_path), stack))


def start_chatd(
    name: str,
    llm_url: str,
    workdir: Path,
    chatd_path: Path,
    stack: contextlib.ExitStack,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> Process:
    """Start ``chatd serve`` on a free port against the LLM at ``llm_url``, with JSON logs,
    a KB of its own, the settings ``env`` and ``extra`` arguments, and wait for its URL (see
    :func:`spawn_process`, :func:`wait_for_url`)."""
    kb = str(workdir / f"kb-{name}.sqlite3")
    settings = clean_env(chatd_path, CHATD_KB_PATH=kb, CHATD_LOG_FORMAT="json", **(env or {}))
    args = ["serve", "--port", "0", "--llm-url", llm_url, *extra]
    return wait_for_url(spawn_process(name, args, workdir, settings, stack))


@contextlib.contextmanager
def log_tails_on_failure(processes: Iterable[Process]) -> Iterator[None]:
    """If the block raises, print each process's log tail on stderr, then let it go on."""
    try:
        yield
    except BaseException:
        for process in processes:
            print(f"--- {process.name} log tail ---\n{process.log_tail()}", file=sys.stderr)
        raise
