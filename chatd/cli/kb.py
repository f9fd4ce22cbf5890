"""``chatd kb load FILE``: put FAQ entries into the configured knowledge base.

Entries whose question is already there (ignoring case) are replaced, so
loading the same file twice changes nothing. Loading into a new knowledge
base does not seed it with the sample FAQ first: the operator's own entries
are all it will hold.
"""

from __future__ import annotations

import sys

import trio

from chatd.config import Settings
from chatd.exceptions import ChatdError, ConfigError
from chatd.stores.kb import load_faq_file, open_knowledge_base

__all__ = ["load_kb_file", "run_kb_load"]


async def load_kb_file(settings: Settings, path: str) -> int:
    """Load the FAQ file at ``path``; returns how many entries were new or changed.

    The whole file is read and checked before the knowledge base is opened,
    so a bad row leaves it untouched.
    """
    entries = await trio.to_thread.run_sync(load_faq_file, path)
    async with open_knowledge_base(settings.kb, seed=False) as kb:
        return await kb.add(entries)


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
