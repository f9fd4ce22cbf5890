"""The semantic scenario's cost probes: a model's CPU per query, its import and load in fresh
processes that refuse the network, its install size, and a generated FAQ embedded at scale;
timed only while no other benchmark holds /tmp/bench.lock."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trio

from chatd.stores.kb import FAQEntry
from loadgen.script import ROOT
from loadgen.semantic_models import TEXTS, Model, Variant, installed

LOCK = Path("/tmp/bench.lock")
MY_LOCK = f"bench_semantic.py pid {os.getpid()}\n"


def foreign_lock() -> bool:
    """Whether another benchmark holds /tmp/bench.lock."""
    try:
        return LOCK.read_text() != MY_LOCK
    except OSError:
        return False


async def wait_for_lock() -> None:
    """Wait while another benchmark runs (it holds /tmp/bench.lock)."""
    if foreign_lock():
        print("waiting for /tmp/bench.lock to go before timing ...", file=sys.stderr)
    while foreign_lock():  # noqa: ASYNC110 (another process's file: nothing to wait on)
        await trio.sleep(5)


def hold_lock() -> None:
    """Take /tmp/bench.lock (after any other benchmark's) so others wait for this one."""
    while True:
        trio.run(wait_for_lock)
        with contextlib.suppress(FileExistsError), LOCK.open("x") as f:
            f.write(MY_LOCK)
            return


NO_NETWORK = r"""
import sys
def _no_network(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        raise OSError(f"network refused by the benchmark ({event})")
sys.addaudithook(_no_network)
"""
"""What every probe starts with (:func:`run_probe`): from there on its process refuses the
network."""

LOAD_PROBE = r"""
import json, os, time
def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
out = {}
import chatd.stores.kb.sqlite, chatd.stores.kb.rank
out["rss_chatd_kib"] = rss_kib()
import numpy
out["rss_numpy_kib"] = rss_kib()
c0, w0 = time.process_time(), time.perf_counter()
exec(IMPORT, globals())
out["import_cpu_s"] = time.process_time() - c0
out["import_wall_s"] = time.perf_counter() - w0
out["rss_imported_kib"] = rss_kib()
c0, w0 = time.process_time(), time.perf_counter()
exec(SETUP, globals())
out["load_cpu_s"] = time.process_time() - c0
out["load_wall_s"] = time.perf_counter() - w0
out["rss_loaded_kib"] = rss_kib()
eval(QUERY, {"model": model, "texts": ["where is my order?"]})
out["rss_first_query_kib"] = rss_kib()
print(json.dumps(out))
"""

WORDLLAMA_DEFAULT_PROBE = r"""
import tempfile
import logging
logging.disable(logging.CRITICAL)
from wordllama import WordLlama
with tempfile.TemporaryDirectory() as empty_cache:
    try:
        WordLlama.load(cache_dir=empty_cache)
        print("loaded")
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
"""


def run_probe(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python that refuses the network, its output captured."""
    command = [sys.executable, "-c", NO_NETWORK + code]
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd)


def load_cost(model: Model, runs: int) -> dict[str, Any]:
    """Import and load ``model`` in ``runs`` fresh processes that refuse the network: the
    times, and the resident memory each step adds (chatd's and numpy's: the first run's)."""
    code = f"IMPORT = {'import ' + model.package!r}\nSETUP = {model.setup!r}\n"
    code += f"QUERY = {model.query!r}\n" + LOAD_PROBE
    results = []
    for _ in range(runs):
        proc = run_probe(code, cwd=ROOT)
        if proc.returncode != 0:
            return {"offline_load": False, "error": proc.stderr.strip().splitlines()[-1:]}
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    def median(value: Callable[[dict[str, float]], float]) -> float:
        return statistics.median(value(r) for r in results)

    def mib(kib: float) -> float:
        return round(kib / 1024, 1)

    r0 = results[0]
    return {
        "offline_load": True,
        "import_wall_s_median": median(lambda r: r["import_wall_s"]),
        "load_wall_s_median": median(lambda r: r["load_wall_s"]),
        "load_cpu_s_median": median(lambda r: r["load_cpu_s"]),
        "runs": runs,
        "rss_chatd_mib": mib(r0["rss_chatd_kib"]),
        "rss_added_numpy_mib": mib(r0["rss_numpy_kib"] - r0["rss_chatd_kib"]),
        "rss_added_import_mib": mib(median(lambda r: r["rss_imported_kib"] - r["rss_numpy_kib"])),
        "rss_added_model_mib": mib(median(lambda r: r["rss_first_query_kib"] - r["rss_numpy_kib"])),
        "rss_added_total_mib": mib(median(lambda r: r["rss_first_query_kib"] - r["rss_chatd_kib"])),
    }


def wordllama_default_load() -> str:
    """What ``WordLlama.load()`` with its defaults does offline, with an empty cache."""
    proc = run_probe(WORDLLAMA_DEFAULT_PROBE)
    return (proc.stdout.strip() or proc.stderr.strip()).splitlines()[-1][:300]


def requirements_closure(names: Sequence[str]) -> set[str]:
    """The installed distributions ``names`` need, themselves included (no extras)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen or not installed(name):
            continue
        seen.add(name)
        for spec in importlib.metadata.distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def install_cost(package: str) -> dict[str, Any]:
    """The packages ``package`` brings that chatd does not already need, and their size
    (the files their RECORDs list)."""
    added = sorted(requirements_closure([package]) - requirements_closure(["chatd"]))
    sizes = {}
    for name in added:
        dist = importlib.metadata.distribution(name)
        paths = [Path(str(dist.locate_file(f))) for f in dist.files or []]
        sizes[name] = sum(path.stat().st_size for path in paths if path.is_file())
    return {
        "packages": {
            n: {"version": importlib.metadata.version(n), "mib": round(sizes[n] / 2**20, 1)}
            for n in added
        },
        "total_mib": round(sum(sizes.values()) / 2**20, 1),
    }


def query_cost(model: Model, texts: list[str], docs: np.ndarray, n: int) -> dict[str, float]:
    """Median CPU (and wall) time to embed one query, and with its cosines to ``docs``."""
    for t in texts[:50]:
        model.embed_queries([t])
    embed_cpu, full_cpu, full_wall = [], [], []
    for i in range(n):
        t = texts[i % len(texts)]
        c0 = time.process_time_ns()
        q = model.embed_queries([t])[0]
        c1 = time.process_time_ns()
        embed_cpu.append(c1 - c0)
        w0 = time.perf_counter_ns()
        c0 = time.process_time_ns()
        q = model.embed_queries([t])[0]
        scores = docs @ q
        top = np.argpartition(-scores, min(10, len(scores) - 1))[:10]
        top[np.argsort(-scores[top])]
        full_cpu.append(time.process_time_ns() - c0)
        full_wall.append(time.perf_counter_ns() - w0)
    return {
        "embed_cpu_us_median": statistics.median(embed_cpu) / 1000,
        "embed_cpu_us_p90": float(np.percentile(embed_cpu, 90)) / 1000,
        "search_cpu_us_median": statistics.median(full_cpu) / 1000,
        "search_wall_us_median": statistics.median(full_wall) / 1000,
    }


def synthetic_faq(faq: Sequence[FAQEntry], n: int, seed: int = 16) -> list[FAQEntry]:
    """``n`` entries made of the real ones' words, recombined."""
    rng = random.Random(seed)
    q_words = [re.findall(r"[\w'-]+", e.question) for e in faq]
    sentences = [s for e in faq for s in re.split(r"(?<=[.!?])\s+", e.answer) if s]
    tags = sorted({t for e in faq for t in e.tags})
    out = []
    for _ in range(n):
        a, b = rng.sample(q_words, 2)
        words = a[: max(1, len(a) // 2)] + b[len(b) // 2 :]
        if rng.random() < 0.5:
            words.insert(rng.randrange(len(words) + 1), rng.choice(tags))
        question = " ".join(words).capitalize() + "?"
        out.append(
            FAQEntry(
                question=question,
                answer=" ".join(rng.sample(sentences, rng.randint(1, 3))),
                tags=tuple(rng.sample(tags, rng.randint(2, 8))),
            )
        )
    return out


def scale_cost(
    model: Model,
    mode: str,
    text_names: Sequence[str],
    entries: list[FAQEntry],
    texts: list[str],
    n: int,
) -> dict[str, Any]:
    """The time to embed ``entries`` as each of ``text_names``, and the per-query cost over
    the first of them."""
    out: dict[str, Any] = {"entries": len(entries)}
    docs = []
    for name in text_names:
        strings = [TEXTS[name](e) for e in entries]
        c0, w0 = time.process_time(), time.perf_counter()
        docs.append(model.embed_docs(strings, mode))
        out[f"embed_all_{name}_cpu_s"] = round(time.process_time() - c0, 3)
        out[f"embed_all_{name}_wall_s"] = round(time.perf_counter() - w0, 3)
    out["matrix_mib"] = round(docs[0].nbytes / 2**20, 1)
    return {**out, **query_cost(model, texts, docs[0], n)}


def model_cost(
    model: Model, chosen: Variant, faq: list[FAQEntry], texts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """A model's cost, the FAQ embedded as its chosen entry text (``qt`` for ``max``)."""
    trio.run(wait_for_lock)
    lock_before = foreign_lock()
    text, _, mode = chosen.name.partition("/")
    text = "qt" if text == "max" else text
    docs = model.embed_docs([TEXTS[text](e) for e in faq], mode)
    cost = {
        "query": query_cost(model, texts, docs, args.queries),
        "load": load_cost(model, args.load_runs),
        "install": install_cost(model.package),
        "scale": scale_cost(
            model,
            mode,
            list(dict.fromkeys([text, "qta"])),
            synthetic_faq(faq, args.entries),
            texts,
            args.queries,
        ),
    }
    return {**cost, "bench_lock_seen": lock_before or foreign_lock()}
