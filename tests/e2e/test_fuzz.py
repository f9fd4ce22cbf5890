"""The protocol fuzzer's tests: :func:`test_protocol_fuzz` runs the fuzzer
of tests/e2e/fuzzer/ (its docstring says what it sends and checks) for CI, and
:func:`test_frame_limit_counts_bytes` keeps fixed the bug it found.

Seeded: ``CHATD_FUZZ_SEED=N`` runs another seed, ``CHATD_FUZZ_EXAMPLES=N``
another count; the seed is printed and named in every failure.
benchmarks/fuzz.py runs the same fuzzer for long and imports it from here:
the names in ``__all__`` are re-exported for it.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import orjson
import trio

from chatd.config import LimitsSettings
from chatd.testing import open_chat_client, open_chatd
from tests.e2e.conftest import MakeSettings
from tests.e2e.fuzzer.harness import Harness, settled_rss
from tests.e2e.fuzzer.machine import STEPS
from tests.e2e.fuzzer.replies import fuzz_settings
from tests.e2e.fuzzer.run import (
    CHUNK,
    CI_EXAMPLES,
    DEFAULT_SEED,
    MEMORY_TOLERANCE,
    FuzzResult,
    fuzz,
    seed_from_env,
    warnings_only,
)

__all__ = [
    "CHUNK",
    "DEFAULT_SEED",
    "MEMORY_TOLERANCE",
    "STEPS",
    "FuzzResult",
    "Harness",
    "fuzz",
    "fuzz_settings",
    "settled_rss",
    "warnings_only",
]


async def test_protocol_fuzz(tmp_path: Path) -> None:
    """2,000 examples of random frames, bodies and connections: every
    invariant of protocol.md holds, and chatd ends as it began.

    Memory: the baseline is the RSS after the first chunk (200 examples), by
    when everything bounded has filled (the answer cache at 128 answers,
    session histories, trio's heap of expired deadlines, which keeps up to a
    thousand; hypothesis's strategy caches) and every code path has run; it
    grows 7-10% in that chunk and 2-4% over the 1,800 examples after it on
    this machine (benchmarks/fuzz.py records it for 100,000). Allowing 10%
    (~9 MiB) after that fails a leak of 5 KB an example: one request's
    events or state, or one connection's, kept per example.
    """
    run_seed = seed_from_env()
    examples = int(os.environ.get("CHATD_FUZZ_EXAMPLES") or CI_EXAMPLES)
    print(f"fuzz seed {run_seed} (CHATD_FUZZ_SEED={run_seed} runs it again), {examples} examples")
    with warnings_only():
        async with open_chatd(fuzz_settings(tmp_path / "kb.sqlite3")) as chatd:
            result = await fuzz(chatd, examples=examples, run_seed=run_seed)
    print(
        f"{result.examples} examples ({result.sequences} sequences) in {result.seconds:.1f} s; "
        f"bystander answers {result.bystander_answers}; RSS after each chunk "
        f"{[rss >> 20 for rss in result.rss]}, at the end {result.rss_end >> 20} MiB"
    )
    print(dict(sorted(result.counts.items())))
    assert result.examples >= examples, (run_seed, result)
    assert result.bystander_answers > 0, (run_seed, result)
    assert result.rss_end <= result.rss[0] * (1 + MEMORY_TOLERANCE), (run_seed, result)


async def test_frame_limit_counts_bytes(make_settings: MakeSettings) -> None:
    """A frame of 1,030 characters but over 2,048 bytes (two-byte 'é's) is
    too_large, as the same bytes are as a ``POST /v1/chat`` body."""
    settings = make_settings(limits=LimitsSettings(max_frame_bytes=2048))
    fields = {"type": "chat", "id": "wide", "message": "hello there", "pad": "é" * 1000}
    payload = orjson.dumps(fields)
    assert len(payload.decode()) < 2048 < len(payload)
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.post(
                "/v1/chat", content=payload, headers={"content-type": "application/json"}
            )
        assert response.status_code == 413
        with trio.fail_after(10):
            await client.send(payload.decode())
            end = await client.finish("wide")
        assert (end["type"], end.get("code")) == ("error", "too_large")
