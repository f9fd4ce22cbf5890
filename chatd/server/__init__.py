"""The server: the quart-trio app on hypercorn, and the process's lifetime.

Owns ``serve()``, the nursery everything runs in: hypercorn, the built-in
simulated LLM when no LLM URL is set, and signal handling for a graceful
drain. May import every other part of chatd; nothing imports it.
"""

from chatd.server.serve import Running, serve

__all__ = ["Running", "serve"]
