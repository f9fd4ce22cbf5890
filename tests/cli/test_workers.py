"""``chatd serve --workers N``: a supervisor and N worker processes on one port;
and SIGTERM while ``chatd serve`` starts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import trio

from chatd.testing import open_chat_client, wait_until

CHATD = [sys.executable, "-m", "chatd"]

STUBBORN_WORKER = r"""
import json, os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
worker = int(os.environ["CHATD_INHERIT_WORKER"])
line = json.dumps({"event": "worker serving", "worker": worker}) + "\n"
os.write(1, line.encode())  # one write: the other worker writes to the same file
while True:
    time.sleep(3600)
"""
"""A worker that ignores SIGTERM, as one stuck in its shutdown would."""

SUPERVISING_STUBBORN_WORKERS = [
    sys.executable,
    "-c",
    "import sys\n"
    "import chatd.cli.main as cli\n"
    f"cli._worker_command = lambda args: [sys.executable, '-c', {STUBBORN_WORKER!r}]\n"
    "sys.exit(cli.main(sys.argv[1:]))\n",
]
"""``chatd`` with its own ``main()`` and supervisor, whose workers are stubborn."""


class Chatd:
    """A running ``chatd serve`` process and its log (every process writes it)."""

    def __init__(self, proc: trio.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    def text(self) -> str:
        return self.log.read_bytes().decode(errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.text().splitlines() if line.startswith("{")]

    def events(self, event: str, **fields: object) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines()
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(self, event: str, count: int = 1, **fields: object) -> list[dict[str, Any]]:
        await wait_until(lambda: len(self.events(event, **fields)) >= count, within=30)
        return self.events(event, **fields)

    async def exit_status(self) -> int | None:
        """Its exit status; a guard fails the test if it does not exit."""
        await wait_until(lambda: self.proc.poll() is not None, within=30)
        return self.proc.returncode


@contextlib.asynccontextmanager
async def open_chatd(
    tmp_path: Path, *args: str, command: Sequence[str] = CHATD, **env: str
) -> AsyncIterator[Chatd]:
    """Start ``command serve ARGS``; on the way out, kill whatever still runs."""
    log = tmp_path / "chatd.log"
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            [*command, "serve", "--port", "0", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "CHATD_LOG_FORMAT": "json", **env},
        )
    running = Chatd(proc, log)
    try:
        yield running
    except BaseException:
        print(running.text())  # the processes' log, shown with the failure
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
        for line in running.events("worker started"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line["pid"]), signal.SIGKILL)
        await proc.wait()


async def ask(ws_url: str, clients: int) -> list[dict[str, Any]]:
    """One chat on each of ``clients`` connections; their ``done`` events."""
    done: list[dict[str, Any]] = []

    async def one(index: int) -> None:
        async with open_chat_client(ws_url) as client:
            await client.chat("c", f"hello from client {index}")
            done.append(await client.finish("c"))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for index in range(clients):
                nursery.start_soon(one, index)
    return done


async def test_workers_share_one_port_restart_and_drain(tmp_path: Path) -> None:
    """Connections spread over both workers; a killed worker comes back; SIGTERM
    drains every process and the supervisor exits 0."""
    async with open_chatd(tmp_path, "--workers", "2") as supervisor:
        await supervisor.wait_for("worker serving", count=2)
        url = supervisor.events("listening")[0]["url"]
        ws_url = url.replace("http", "ws", 1) + "/v1/ws"
        done = await ask(ws_url, 16)
        assert [d["type"] for d in done] == ["done"] * 16
        served = {line["worker"] for line in supervisor.events("request summary")}
        assert served == {1, 2}, "the kernel spread 16 connections over both workers"

        first = supervisor.events("worker started", worker=1)[0]["pid"]
        os.kill(first, signal.SIGKILL)
        await supervisor.wait_for("worker died; starting it again", worker=1)
        await supervisor.wait_for("worker serving", count=3)
        assert [d["type"] for d in await ask(ws_url, 4)] == ["done"] * 4

        supervisor.proc.send_signal(signal.SIGTERM)
        assert await supervisor.exit_status() == 0
        exited = supervisor.events("worker exited")
        assert {line["worker"] for line in exited} == {1, 2}
        assert all(line["status"] == 0 for line in exited)
        assert not supervisor.events("worker killed")
        assert supervisor.events(
            "workers share no state without redis.url: each has its own "
            "cache, sessions, rate limits and flights"
        )


async def test_sigterm_while_workers_start_stops_them_cleanly(tmp_path: Path) -> None:
    """SIGTERM as soon as the workers are started (Python still loading chatd)
    stops each with status 0, and the supervisor exits 0."""
    async with open_chatd(tmp_path, "--workers", "2") as supervisor:
        await supervisor.wait_for("worker started", count=2)
        supervisor.proc.send_signal(signal.SIGTERM)
        assert await supervisor.exit_status() == 0
        exited = supervisor.events("worker exited")
        assert sorted((line["worker"], line["status"]) for line in exited) == [(1, 0), (2, 0)]
        assert not supervisor.events("worker killed")


async def test_sigterm_while_one_server_starts_exits_0(tmp_path: Path) -> None:
    """SIGTERM at ``chatd serve``'s first log line, while it is still starting
    (before it watches for signals to drain on), exits 0."""
    async with open_chatd(tmp_path) as server:
        await server.wait_for("listening")
        server.proc.send_signal(signal.SIGTERM)
        assert await server.exit_status() == 0


async def test_worker_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    """A worker still running ``shutdown_grace_s + worker_stop_margin_s`` after
    SIGTERM is killed, and the supervisor exits 1 saying so."""
    async with open_chatd(
        tmp_path,
        "--workers",
        "2",
        command=SUPERVISING_STUBBORN_WORKERS,
        CHATD_SERVER_SHUTDOWN_GRACE_S="0",
        CHATD_SERVER_WORKER_STOP_MARGIN_S="0.2",
    ) as supervisor:
        await supervisor.wait_for("worker serving", count=2)
        supervisor.proc.send_signal(signal.SIGTERM)
        assert await supervisor.exit_status() == 1
        assert supervisor.events("workers still running past the grace", grace_s=0.2)
        assert {line["worker"] for line in supervisor.events("worker killed")} == {1, 2}
        exited = supervisor.events("worker exited")
        assert sorted((line["worker"], line["status"]) for line in exited) == [
            (1, -signal.SIGKILL),
            (2, -signal.SIGKILL),
        ]
        assert "chatd: workers did not stop cleanly: worker " in supervisor.text()


async def test_second_signal_kills_the_workers_at_once(tmp_path: Path) -> None:
    """A second signal kills workers that would otherwise have an hour to stop."""
    async with open_chatd(
        tmp_path,
        "--workers",
        "2",
        command=SUPERVISING_STUBBORN_WORKERS,
        CHATD_SERVER_SHUTDOWN_GRACE_S="3600",
    ) as supervisor:
        await supervisor.wait_for("worker serving", count=2)
        supervisor.proc.send_signal(signal.SIGTERM)
        await supervisor.wait_for("signal: asking the workers to stop")
        supervisor.proc.send_signal(signal.SIGINT)
        assert await supervisor.exit_status() == 1
        assert supervisor.events("second signal: killing the workers", signal="SIGINT")
        assert not supervisor.events("workers still running past the grace")
        assert {line["worker"] for line in supervisor.events("worker killed")} == {1, 2}


async def test_sigterm_with_50_streams_in_flight(tmp_path: Path) -> None:
    """SIGTERM to ``--workers 2`` with 50 answers streaming: each ends with one
    terminal event (its answer, or shutting_down once the grace is over), every
    worker exits by itself, and the supervisor exits 0."""
    async with open_chatd(
        tmp_path,
        "--workers",
        "2",
        CHATD_SERVER_SHUTDOWN_GRACE_S="1",
        CHATD_SIM_TOKENS_PER_S="20",  # long answers: they outlast the grace
    ) as supervisor:
        await supervisor.wait_for("worker serving", count=2)
        url = supervisor.events("listening")[0]["url"]
        ws_url = url.replace("http", "ws", 1) + "/v1/ws"
        terminals: list[dict[str, Any]] = []

        async def streams(index: int, started: trio.Event) -> None:
            async with open_chat_client(ws_url) as client:
                ids = [f"s{index}-{n}" for n in range(5)]
                for n, request_id in enumerate(ids):
                    part = chr(ord("a") + index) + chr(ord("a") + n)  # unique, no digits
                    await client.chat(request_id, f"tell me a long story about the sea, {part}")
                for request_id in ids:
                    await client.wait_for(request_id, "token")
                started.set()
                for request_id in ids:
                    terminals.append(await client.finish(request_id))
                    types = client.types(request_id)
                    assert sum(t in ("done", "error") for t in types) == 1, types

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                ready = []
                for index in range(10):
                    ready.append(trio.Event())
                    nursery.start_soon(streams, index, ready[-1])
                for event in ready:
                    await event.wait()
                supervisor.proc.send_signal(signal.SIGTERM)
        assert len(terminals) == 50
        endings = {(t["type"], t.get("finish_reason") or t.get("code")) for t in terminals}
        assert endings <= {("done", "stop"), ("error", "shutting_down")}, endings
        assert ("error", "shutting_down") in endings, "some answers outlasted the grace"
        assert await supervisor.exit_status() == 0
        assert not supervisor.events("worker killed")
