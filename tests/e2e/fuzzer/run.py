"""A whole fuzz run: :func:`fuzz` runs the state machine in chunks against
one chatd with a bystander streaming throughout, then checks chatd is left
clean; with CI's seed and counts, and the memory measure it checks."""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable, Iterator

import attrs
import httpx
import structlog
import trio

from chatd.testing import Chatd, wait_until

from .harness import Bystander, Harness, settled_rss
from .ledger import Mismatch
from .machine import run_machine

DEFAULT_SEED = 20_150_815
"""CI's seed, so a failure there is the same failure here."""
CI_EXAMPLES = 2_000
CHUNK = 200
"""Examples per hypothesis run. A run keeps what it learnt of every example
until it ends (tens of KB each), which would swamp the memory check."""
MEMORY_TOLERANCE = 0.10
"""RSS may end at most 10% over its baseline, after the first chunk (see test_protocol_fuzz)."""


@attrs.frozen
class FuzzResult:
    """What a run did."""

    examples: int
    """Hypothesis's valid examples."""
    sequences: int
    """Examples run against chatd (with those hypothesis cut short)."""
    seconds: float
    counts: dict[str, int]
    bystander_answers: int
    rss: list[int]
    """Resident memory after each chunk (see :func:`settled_rss`)."""
    rss_end: int
    """... and once the fuzz's connections are closed and chatd is idle."""
    step_seconds: dict[str, float]


async def fuzz(
    chatd: Chatd,
    *,
    examples: int,
    run_seed: int,
    budget_s: float | None = None,
    on_chunk: Callable[[int, Exception | None, Harness], None] | None = None,
) -> FuzzResult:
    """Fuzz ``chatd`` for ``examples`` examples (or until ``budget_s`` has
    passed) from ``run_seed``, a bystander streaming throughout; then check
    chatd is left clean.

    The examples run in hypothesis runs of :data:`CHUNK`, the n-th from seed
    ``run_seed + n``. A failure raises, naming its seed, unless ``on_chunk``
    is given: it hears of each chunk's end (and failure) and the run goes on.
    """
    stop = trio.Event()
    statuses: collections.Counter[str] = collections.Counter()
    rss: list[int] = []
    async with (
        contextlib.AsyncExitStack() as unfreeze,  # on any way out, after the rest
        trio.open_nursery() as nursery,
        httpx.AsyncClient(base_url=chatd.url, timeout=20) as http,
    ):
        bystander = Bystander(chatd.ws_url)
        harness = Harness(chatd, nursery, http, bystander, run_seed)
        nursery.start_soon(bystander.run, stop)
        started = time.perf_counter()
        for index in range(-(-examples // CHUNK)):
            size = min(CHUNK, examples - index * CHUNK)
            failure: Exception | None = None
            try:
                statuses += await trio.to_thread.run_sync(
                    run_machine, harness, size, run_seed + index
                )
            except Exception as exc:
                exc.add_note(
                    f"fuzz seed {run_seed}: chunk {index}, hypothesis seed {run_seed + index}"
                )
                if on_chunk is None:
                    raise
                failure = exc
            rss.append(settled_rss())
            if index == 0:
                gc.freeze()  # what lives now, no collection scans again until the end: 6% faster
                unfreeze.callback(gc.unfreeze)
            if on_chunk is not None:
                on_chunk(index, failure, harness)
            if budget_s is not None and time.perf_counter() - started > budget_s:
                break
        seconds = time.perf_counter() - started
        if harness.spare is not None:
            await harness.spare.close()
        stop.set()
        with trio.fail_after(15):
            await bystander.finished.wait()
        nursery.cancel_scope.cancel()  # readers of sockets a failed example left
    if bystander.failure is not None:
        raise Mismatch(bystander.failure)
    assert chatd.sim is not None
    sim, pipeline = chatd.sim, chatd.pipeline
    await wait_until(lambda: not chatd.running.state.connections, within=5)
    await wait_until(lambda: len(pipeline.requests) == 0, within=5)
    await wait_until(lambda: sim.statistics().active == 0, within=5)
    counts = dict(harness.counts)
    counts.update({f"hypothesis_{status}": n for status, n in statuses.items()})
    return FuzzResult(
        statuses["valid"],
        harness.counts["examples"],
        seconds,
        counts,
        bystander.answers,
        rss,
        settled_rss(),
        dict(harness.seconds),
    )


@contextlib.contextmanager
def warnings_only() -> Iterator[None]:
    """chatd's logs at warning and above only, for the block: a line per
    request, rendered, would cost a tenth of the fuzzer's time."""
    config = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        yield
    finally:
        structlog.configure(wrapper_class=config["wrapper_class"])


def seed_from_env() -> int:
    """``CHATD_FUZZ_SEED``, or CI's fixed seed."""
    return int(os.environ.get("CHATD_FUZZ_SEED") or DEFAULT_SEED)
