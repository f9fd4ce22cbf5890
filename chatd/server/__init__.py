"""The server: the quart-trio app on hypercorn, and the process's lifetime.

Owns ``serve()``, the nursery everything runs in: hypercorn, the built-in
simulated LLM when no LLM URL is set, and signal handling for a graceful
drain. May import every other part of chatd; nothing imports it. Import
``serve`` from :mod:`chatd.server.serve`: this package imports nothing, so
the supervisor of ``--workers N`` (:mod:`chatd.server.workers`) loads none of
the server it supervises (~25 MB less).
"""
