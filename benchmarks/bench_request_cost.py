"""What one chat costs chatd, counted rather than timed: calls, scopes, tasks, switches.

Issue 13 asks to "count what a request allocates and enters, and remove what is not needed".
chatd runs in this process; the simulated LLM and a raw-socket client run in their own. A
profile hook counts calls while short chats run one after another. Counts barely depend on the
machine's speed or load, so they compare commits where CPU time cannot.

    python benchmarks/bench_request_cost.py [--chats 300] [--quick]

Writes benchmarks/results/request-cost.{json,md} (``--quick`` only prints the report).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import FrameType
from typing import Any

import trio
from loadgen.processes import start_sim
from loadgen.script import ROOT
from machine import describe_machine, machine_markdown, write_results

RESULTS = Path(__file__).parent / "results"
WATCHED = {
    "CancelScope.__enter__": "cancel scopes entered",
    "Runner.spawn_impl": "tasks started",
    "wait_task_rescheduled": "task switches (a wait, or a schedule point)",
    "BoundLoggerBase._proxy_to_logger": "log lines",
    "Counter.inc": "metric updates",
    "Histogram.observe": "metric updates",
}
C_WATCHED = {"write": "socket writes", "read": "socket reads", "recv": "socket reads"}

CLIENT = textwrap.dedent(
    r"""
    import base64, os, socket, sys, time
    port, chats = int(sys.argv[1]), int(sys.argv[2])
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    assert data.startswith(b"HTTP/1.1 101"), data[:100]  # else ask() would wait forever
    data = data.split(b"\r\n\r\n", 1)[1]
    def frame(text):
        payload = text.encode(); mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        size = len(payload)
        if size < 126:
            head = bytes([0x81, 0x80 | size])
        else:
            head = bytes([0x81, 0xFE]) + size.to_bytes(2, "big")
        return head + mask + masked
    def ask(i):
        global data
        s.sendall(frame('{"type":"chat","id":"c%d","message":"chat %d of %s: tell me something"}'
                        % (i, i, sys.argv[3])))
        while b'"type":"done"' not in data and b'"type":"error"' not in data:
            data += s.recv(65536)
        data = b""
    for i in range(5):
        ask(-i - 1)  # warm: pools, caches
    print("warm", flush=True)
    sys.stdin.readline()
    for i in range(chats):
        ask(i)
    print("done", flush=True)
    """
)


class Counter:
    """A profile hook counting calls, and the watched ones by name."""

    def __init__(self) -> None:
        self.calls = 0
        self.watched: collections.Counter[str] = collections.Counter()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            self.calls += 1
            label = WATCHED.get(frame.f_code.co_qualname)
            if label is not None:
                self.watched[label] += 1
        elif event == "c_call":
            label = C_WATCHED.get(getattr(arg, "__name__", ""))
            if label is not None:
                self.watched[label] += 1


async def measure(chats: int, llm_url: str, kb_path: str) -> dict[str, Any]:
    """Serve here, ask ``chats`` chats from a client process, count."""
    from chatd.config import KBSettings, LLMSettings, ServerSettings, Settings
    from chatd.server.serve import serve

    settings = Settings(
        server=ServerSettings(port=0),  # a free port: two runs at once do not collide
        llm=LLMSettings(url=llm_url),
        kb=KBSettings(path=kb_path),
    )
    async with trio.open_nursery() as nursery:
        running = await nursery.start(functools.partial(serve, settings, handle_signals=False))
        port = int(running.url.rsplit(":", 1)[1])
        client = await trio.lowlevel.open_process(
            [sys.executable, "-c", CLIENT, str(port), str(chats), str(time.time())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert client.stdin is not None and client.stdout is not None
        await _line(client.stdout, b"warm")
        counter = Counter()
        started = time.process_time()
        sys.setprofile(counter)
        await client.stdin.send_all(b"go\n")
        await _line(client.stdout, b"done")
        sys.setprofile(None)
        cpu = time.process_time() - started
        await client.wait()
        nursery.cancel_scope.cancel()
    labels = sorted({*WATCHED.values(), *C_WATCHED.values()})
    per_chat = {label: round(counter.watched[label] / chats, 1) for label in labels}
    return {
        "chats": chats,
        "python calls per chat": round(counter.calls / chats),
        **per_chat,
        "cpu ms per chat (profiled, not comparable)": round(cpu / chats * 1000, 2),
    }


async def _line(stream: trio.abc.ReceiveStream, word: bytes) -> None:
    seen = b""
    while word not in seen:
        data = await stream.receive_some(100)
        if not data:
            raise RuntimeError("the client went away")
        seen += data


def markdown(result: dict[str, Any]) -> str:
    counts = [(key, value) for key, value in result.items() if key not in ("chats", "machine")]
    rows = "\n".join(f"| {key} | {value} |" for key, value in counts)
    return (
        "# What one chat costs, counted\n\n"
        f"{result['chats']} short chats (a sentence each, direct path), one after another on one "
        "WebSocket; the simulated LLM and the client in processes of their own; counts per "
        "chat, from a profile hook in chatd's process.\n\n"
        f"| per chat | count |\n|---|---|\n{rows}\n\n"
        f"## Machine\n\n{machine_markdown(result['machine'])}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="50 chats, no results file")
    args = parser.parse_args()
    from chatd.config import LogSettings
    from chatd.observability import configure_logging

    machine = describe_machine()
    with (
        tempfile.TemporaryDirectory(prefix="request-cost-") as tmp,
        contextlib.ExitStack() as stack,
        open("/dev/null", "w") as nowhere,
    ):
        sim = start_sim(Path(tmp), ROOT, 0, 100_000, stack)
        configure_logging(LogSettings(format="json"), stream=nowhere)
        chats = 50 if args.quick else args.chats
        counts = trio.run(measure, chats, sim.listening["url"], f"{tmp}/kb.sqlite3")
    result = {**counts, "machine": machine}
    write_results(None if args.quick else RESULTS, "request-cost", result, markdown(result))


if __name__ == "__main__":
    main()
