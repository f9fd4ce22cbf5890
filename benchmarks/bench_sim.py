"""CPU per streamed token of the simulated LLM, measured from outside its process.

The simulator (``serve_sim_llm`` under ``trio.run``) runs alone in a subprocess; this one
drives ``--streams`` concurrent streamed completions of ``--tokens`` tokens over raw loopback
sockets, one scenario per ``--tokens-per-s`` rate (the report says how CPU is counted).
Results go to benchmarks/results/sim-cpu-per-token{,-quick}.{json,md}.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from loadgen.processes import pid_cpu_seconds
from loadgen.script import ROOT, markdown_table, script_parser
from machine import describe_machine, machine_markdown, write_results

TTFT_MS = 50.0
END = b"data: [DONE]\n\n\r\n0\r\n\r\n"  # the last SSE event, then the chunked terminator

SIM_CODE = """
import sys, trio
from chatd.config import SimSettings
from chatd.llm.sim import serve_sim_llm

async def main():
    async with trio.open_nursery() as nursery:
        settings = SimSettings(ttft_ms=float(sys.argv[1]), tokens_per_s=float(sys.argv[2]))
        sim = await nursery.start(serve_sim_llm, settings)
        print(sim.port, flush=True)

trio.run(main)
"""


def request_bytes(port: int, tokens: int) -> bytes:
    """A streamed completion whose answer is exactly ``tokens`` content tokens.

    The conversation ends in a tool result of plenty of words, which the
    simulator quotes verbatim; ``max_tokens`` cuts the quote to length.
    """
    words = " ".join(f"word{i % 97}" for i in range(tokens + 10))
    tool_call = {"id": "c1", "type": "function", "function": {"name": "lookup"}}
    messages = [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "c1", "content": words},
    ]
    request = {"model": "bench", "stream": True, "max_tokens": tokens, "messages": messages}
    body = orjson.dumps(request)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one_stream(port: int, request: bytes, totals: dict[str, int]) -> None:
    """Send one request and read its answer to the end, looking only at the tail."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)
        tail = b""
        while not tail.endswith(END):
            data = await stream.receive_some(65536)
            if not data:
                raise RuntimeError("the simulator closed a stream early")
            totals["reads"] += 1
            totals["bytes"] += len(data)
            tail = (tail + data)[-64:]


async def run_scenario(
    sim: subprocess.Popen[bytes], port: int, streams: int, tokens: int, rate: float
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as control:
        await control.post("/_sim/timing", json={"ttft_ms": TTFT_MS, "tokens_per_s": rate})
        await control.post("/_sim/reset")
        request = request_bytes(port, tokens)
        totals = {"reads": 0, "bytes": 0}
        cpu_before, wall_before = pid_cpu_seconds(sim.pid), time.perf_counter()
        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                for _ in range(streams):
                    nursery.start_soon(one_stream, port, request, totals)
        wall = time.perf_counter() - wall_before
        cpu = pid_cpu_seconds(sim.pid) - cpu_before
        stats = (await control.get("/_sim/stats")).json()
    if stats["completed"] != streams:
        raise RuntimeError(f"expected {streams} completed answers, the simulator says {stats}")
    total_tokens = streams * tokens
    ideal_s = TTFT_MS / 1000 + (tokens - 1) / rate
    return {
        "streams": streams,
        "tokens_per_stream": tokens,
        "tokens_per_s_per_stream": rate,
        "demanded_tokens_per_s": round(streams * rate),
        "total_tokens": total_tokens,
        "wall_s": round(wall, 3),
        "ideal_wall_s": round(ideal_s, 3),
        "throughput_tokens_per_s": round(total_tokens / wall),
        "sim_cpu_s": round(cpu, 3),
        "sim_cpu_busy": round(cpu / wall, 3),
        "sim_cpu_us_per_token": round(cpu / total_tokens * 1e6, 2),
        "client_reads_per_token": round(totals["reads"] / total_tokens, 3),
        "bytes_per_token": round(totals["bytes"] / total_tokens, 1),
    }


def start_sim() -> tuple[subprocess.Popen[bytes], int]:
    command = [sys.executable, "-c", SIM_CODE, str(TTFT_MS), "100"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sim = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT, env=env)
    assert sim.stdout is not None
    line = sim.stdout.readline()
    if not line:
        sim.wait(10)
        raise RuntimeError("the simulator did not start")
    return sim, int(line)


def markdown(result: dict[str, Any]) -> str:
    header = ["streams", "tokens each", "tokens/s each", "demanded tokens/s",
              "achieved tokens/s", "wall s (ideal)", "sim CPU busy", "sim CPU µs/token",
              "client reads/token"]  # fmt: skip
    table = markdown_table(header, [
        [r["streams"], r["tokens_per_stream"], f"{r['tokens_per_s_per_stream']:g}",
         r["demanded_tokens_per_s"], r["throughput_tokens_per_s"],
         f"{r['wall_s']} ({r['ideal_wall_s']})", f"{r['sim_cpu_busy']:.0%}",
         f"**{r['sim_cpu_us_per_token']}**", r["client_reads_per_token"]]
        for r in result["rows"]
    ])  # fmt: skip
    return (
        "# Simulated LLM: CPU per streamed token\n\n"
        f"Concurrent streamed completions, ttft {TTFT_MS:g} ms, over loopback from a "
        "raw-socket trio client in another process. CPU is the simulator process's "
        "user + system time over the run (connection set-up and request parsing "
        "included), divided by the content tokens streamed.\n\n"
        f"{table}\n\n"
        "Client reads per token near 1 mean one write per token; well below 1, the "
        "simulator was behind and sent every due token in one write. Each stream opens "
        "its own connection; a row of one-token answers gives the cost of a new "
        "connection and request, which the other rows spread over their tokens.\n\n"
        f"## Machine\n\n{machine_markdown(result['machine'])}\n"
    )


def main() -> None:
    parser = script_parser(__doc__, "fewer and shorter streams")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=200, help="content tokens per stream")
    parser.add_argument(
        "--tokens-per-s",
        type=float,
        nargs="+",
        default=[50.0, 200.0, 100_000.0],
        help="per-stream token rates, one scenario each",
    )
    parser.add_argument(
        "--slow-streams",
        type=int,
        default=1000,
        help="streams of the many-slow-streams scenario (5 tokens/s each); 0 skips it",
    )
    args = parser.parse_args()
    streams, tokens = (50, 100) if args.quick else (args.streams, args.tokens)
    scenarios = [(streams, tokens, rate) for rate in args.tokens_per_s]
    if args.slow_streams:
        slow = min(args.slow_streams, 200) if args.quick else args.slow_streams
        scenarios.append((slow, 20 if args.quick else 50, 5.0))
        scenarios.append((slow, 1, 1000.0))  # one-token answers: the cost of a request

    machine = describe_machine()  # before the run: its load average is the one at the start
    sim, port = start_sim()
    try:
        trio.run(run_scenario, sim, port, 20, 20, 1000.0)  # warm-up, not reported
        rows = [trio.run(run_scenario, sim, port, *scenario) for scenario in scenarios]
    finally:
        sim.terminate()
        sim.wait(10)

    result = {"benchmark": "simulated LLM: CPU per streamed token", "rows": rows}
    result["machine"] = machine
    name = "sim-cpu-per-token" + ("-quick" if args.quick else "")
    write_results(Path(__file__).parent / "results", name, result, markdown(result))


if __name__ == "__main__":
    main()
