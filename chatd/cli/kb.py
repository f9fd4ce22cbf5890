"""``chatd kb load FILE`` and ``chatd kb eval [FILE]``.

``load`` puts FAQ entries into the configured knowledge base. Entries whose
question is already there (ignoring case) are replaced, so loading the same
file twice changes nothing. Loading into a new knowledge base does not seed
it with the sample FAQ first: the operator's own entries are all it will hold.

``eval`` asks the configured knowledge base every case of a labelled set
(:mod:`chatd.stores.kb.eval`; by default the one written for the sample FAQ)
and prints, for each half, how often Path B would answer with the right
entry, a wrong one or none, and how often an off-topic message would be
answered from the FAQ.
"""

from __future__ import annotations

import sys

import trio

from chatd.config import Settings
from chatd.exceptions import ChatdError, ConfigError
from chatd.stores.kb import load_faq_file, open_knowledge_base
from chatd.stores.kb.eval import SPLITS, EvalReport, evaluate, load_eval_set

__all__ = ["describe_report", "load_kb_file", "run_kb_eval", "run_kb_load"]


async def load_kb_file(settings: Settings, path: str) -> int:
    """Load the FAQ file at ``path``; returns how many entries were new or changed.

    The whole file is read and checked before the knowledge base is opened,
    so a bad row leaves it untouched.
    """
    entries = await trio.to_thread.run_sync(load_faq_file, path)
    async with open_knowledge_base(settings.kb, seed=False) as kb:
        return await kb.add(entries)


def describe_report(report: EvalReport, show: str | None = None) -> str:
    """A table of each half's rates (and, with ``show``, the cases with that outcome)."""
    lines = [
        f"gate {report.gate:.2f}",
        f"{'half':<6} {'phrasings':>9} {'hit':>7} {'wrong':>7} {'miss':>7}"
        f" {'off-topic':>9} {'answered':>9}",
    ]
    halves = [name for name in SPLITS if report.split(name).verdicts]
    for name in [*halves, "all"] if len(halves) > 1 else halves:
        part = report if name == "all" else report.split(name)
        lines.append(
            f"{name:<6} {part.phrasings:>9} {part.rate('hit'):>7.1%} {part.rate('wrong'):>7.1%}"
            f" {part.rate('miss'):>7.1%} {part.off_topic:>9} {part.rate('answered'):>9.1%}"
        )
    for verdict in report.verdicts:
        if show is not None and (show == "all" or verdict.outcome == show):
            lines.append(
                f"{verdict.outcome:<8} {verdict.confidence:.2f} {verdict.case.text!r}"
                f" -> {verdict.best!r} (labelled {verdict.case.question!r})"
            )
    return "\n".join(lines)


async def _evaluate(
    settings: Settings, path: str | None, gate: float, half: str | None
) -> EvalReport:
    cases = await trio.to_thread.run_sync(load_eval_set, path)
    cases = [case for case in cases if half is None or case.split == half]
    async with open_knowledge_base(settings.kb) as kb:
        return await evaluate(kb, cases, gate)


def run_kb_eval(
    settings: Settings,
    path: str | None,
    gate: float | None = None,
    show: str | None = None,
    half: str | None = None,
) -> int:
    """Run ``chatd kb eval``; returns the exit status (2 for a bad file or setting)."""
    gate = settings.tools.faq_min_confidence if gate is None else gate
    try:
        report = trio.run(_evaluate, settings, path, gate, half)
    except ConfigError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 2
    except ChatdError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 1
    print(describe_report(report, show))
    return 0


def run_kb_load(settings: Settings, path: str) -> int:
    """Run ``chatd kb load``; returns the exit status (2 for a bad file or setting)."""
    try:
        added = trio.run(load_kb_file, settings, path)
    except ConfigError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 2
    except ChatdError as exc:  # the knowledge base failed mid-way (busy, disk full)
        print(f"chatd: {exc}", file=sys.stderr)
        return 1
    kb = settings.kb
    where = kb.path
    if kb.backend == "arango":
        where = f"{kb.arango_url}, database {kb.arango_database}, collection {kb.arango_collection}"
    print(f"loaded {added} entries into {where}")
    return 0
