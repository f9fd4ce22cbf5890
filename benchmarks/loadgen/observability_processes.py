"""The chatd processes ``bench_observability.py`` compares, one per logging configuration.

Each is started with ``--port 0``; at level error chatd never logs where it listens, so the
port is read from /proc. Its CPU is read from its CPU-time clock, in nanoseconds, and its
log's growth from the log file.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Mapping
from pathlib import Path

import attrs
import httpx

from loadgen.processes import Process, clean_env, spawn_process

__all__ = ["Config", "cpu_clock", "read_from", "spawn_chatd", "wait_listening"]


@attrs.frozen
class Config:
    """One chatd: what its CHATD_LOG_* settings are, and where its log goes."""

    label: str
    description: str
    env: Mapping[str, str]
    log_file: Path
    control: bool = False


def listening_ports(pid: int) -> set[int]:
    """TCP ports a process listens on, from /proc: chatd at level error never logs
    its ``listening`` line, so its port 0 is found the way ``ss -ltnp`` does."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


_libc = ctypes.CDLL(None, use_errno=True)


def cpu_clock(pid: int) -> int:
    """The CPU-time clock of process ``pid`` (``clock_getcpuclockid``): its utime + stime
    over all its threads, as /proc/PID/stat gives them, but in nanoseconds rather than 10 ms
    ticks, which would round a round's figure to tens of µs per request."""
    clock = ctypes.c_int()
    error = _libc.clock_getcpuclockid(pid, ctypes.byref(clock))
    if error:
        raise OSError(error, os.strerror(error))
    return clock.value


def spawn_chatd(
    config: Config, llm_url: str, chatd_path: Path, workdir: Path, stack: contextlib.ExitStack
) -> Process:
    """Start ``python -m chatd serve --port 0`` with ``config``'s settings (see
    :func:`~loadgen.processes.spawn_process`). :func:`wait_listening` finds where it listens."""
    kb = str(workdir / f"kb-{config.label}.sqlite3")
    env = clean_env(chatd_path, CHATD_KB_PATH=kb, **config.env)
    args = ["serve", "--port", "0", "--llm-url", llm_url]
    return spawn_process(f"chatd-{config.label}", args, workdir, env, stack)


def wait_listening(process: Process, timeout_s: float = 30.0) -> None:
    """Wait until the process listens on one port and answers ``/healthz``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        process.check_running()
        ports = listening_ports(process.pid)
        if len(ports) == 1:
            url = f"http://127.0.0.1:{ports.pop()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    process.listening = {"url": url, "ws_url": url.replace("http", "ws") + "/v1/ws"}
                    return
        time.sleep(0.05)
    raise RuntimeError(f"{process.name} was not serving in {timeout_s:g} s:\n{process.log_tail()}")


def read_from(path: Path, offset: int) -> bytes:
    """The bytes of ``path`` from ``offset`` on (nothing if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""
