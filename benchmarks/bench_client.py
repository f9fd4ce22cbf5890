"""CPU per streamed token of the LLM client's parse path, two ways: ``parse``, SSE decoding and
chunk assembly alone, and ``client``, the whole ``LLMClient.stream`` path (httpx, deadlines,
events) over an in-memory transport replaying the same bytes, so that the number is the
client's own cost. Results go to benchmarks/results/client-cpu-per-token{,-quick}.{json,md}.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from loadgen.script import markdown_table, script_parser
from machine import describe_machine, machine_markdown, write_results

from chatd.config import LLMSettings
from chatd.llm import ChatRequest, open_llm_client
from chatd.llm.openai import ChunkAssembler
from chatd.llm.sse import SSEDecoder

CHUNK = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000}


def reads(tokens: int, per_read: int) -> list[bytes]:
    """A realistic streamed answer, one chunk per word-sized token, ``per_read`` chunks a read."""
    chunks = []
    for i in range(tokens):
        choice = {"index": 0, "delta": {"content": f" word{i % 97}"}, "finish_reason": None}
        body = {**CHUNK, "model": "chatd-sim", "choices": [choice]}
        chunks.append(b"data: " + orjson.dumps(body) + b"\n\n")
    chunks.append(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    chunks.append(b"data: [DONE]\n\n")
    return [b"".join(chunks[i : i + per_read]) for i in range(0, len(chunks), per_read)]


def bench_parse(tokens: int, per_read: int, repeat: int) -> float:
    data = reads(tokens, per_read)
    start = time.process_time()
    for _ in range(repeat):
        decoder, assembler = SSEDecoder(), ChunkAssembler()
        for piece in data:
            assembler.feed(decoder.feed(piece))
        assembler.finish()
    return (time.process_time() - start) / (tokens * repeat) * 1e6


class _Replay(httpx.AsyncByteStream):
    def __init__(self, data: list[bytes]) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.data:
            yield piece


def bench_client(tokens: int, per_read: int, repeat: int) -> float:
    data = reads(tokens, per_read)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Replay(data)
        )

    async def run() -> float:
        # Coalescing off: each replayed read stands for one window's read already, and
        # coalescing would only sleep a window per read (no CPU, hours of wall time).
        settings = LLMSettings(url="http://bench.invalid/v1", coalesce_ms=0)
        request = ChatRequest([{"role": "user", "content": "hello"}])
        async with open_llm_client(settings, transport=httpx.MockTransport(handler)) as client:
            start = time.process_time()
            for _ in range(repeat):
                async with client.stream(request) as events:
                    async for _event in events:
                        pass
            return (time.process_time() - start) / (tokens * repeat) * 1e6

    return trio.run(run)


def markdown(result: dict[str, Any]) -> str:
    header = ["chunks per read", "parse only (µs/token)", "whole client (µs/token)"]
    cells = [
        [r["per_read"], r["parse_us_per_token"], r["client_us_per_token"]] for r in result["rows"]
    ]
    return (
        "# LLM client: CPU per streamed token\n\n"
        f"{result['answers']} answers of {result['tokens_per_answer']} tokens; one OpenAI chunk "
        "per token; a read carries as many chunks as a coalescing window would gather "
        "(`llm.coalesce_ms` itself is off: it would only sleep between the replayed reads)."
        f"\n\n{markdown_table(header, cells)}\n\n"
        f"## Machine\n\n{machine_markdown(result['machine'])}\n"
    )


def main() -> None:
    parser = script_parser(__doc__, "fewer repetitions")
    parser.add_argument("--tokens", type=int, default=500)
    args = parser.parse_args()
    repeat = 20 if args.quick else 200
    machine = describe_machine()  # before the run: its load average is the one at the start
    rows = []
    for per_read in (1, 4, 16):
        parse = round(bench_parse(args.tokens, per_read, repeat), 2)
        client = round(bench_client(args.tokens, per_read, repeat), 2)
        rows.append(
            {"per_read": per_read, "parse_us_per_token": parse, "client_us_per_token": client}
        )
    result = {
        "benchmark": "client CPU per streamed token",
        "tokens_per_answer": args.tokens,
        "answers": repeat,
        "rows": rows,
        "machine": machine,
    }
    name = "client-cpu-per-token" + ("-quick" if args.quick else "")
    write_results(Path(__file__).parent / "results", name, result, markdown(result))


if __name__ == "__main__":
    main()
