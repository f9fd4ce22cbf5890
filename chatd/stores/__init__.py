"""Backends that hold state: the knowledge base (``kb/``: SQLite, ArangoDB),
session history (``sessions``) and the answer cache (``cache``), each a
:class:`typing.Protocol` with an embedded implementation and a production
sibling tested by the same contract (``redis/`` holds the Redis ones).

Blocking clients (sqlite3, redis-py, python-arango) run in worker threads
through ``trio.to_thread.run_sync`` under the store's own CapacityLimiter, and
their errors become :mod:`chatd.exceptions` at the store's boundary. Imports
only ``chatd.config``, ``chatd.exceptions`` and ``chatd.llm.types``.
"""
