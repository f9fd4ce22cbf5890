"""Resilience: circuit breakers (``breaker``), the janitor (``janitor``), later retries.

Owns how chatd protects itself from unwell dependencies (the LLM, Redis, the
knowledge base) and from work that got stuck: when to stop calling a
dependency, when to try it again, what the caller is told meanwhile, what gets
reaped. Imports only ``chatd.config`` and ``chatd.exceptions``; the pipeline,
tools, llm, stores and server use it, never the other way round.
"""

from chatd.resilience.breaker import (
    PROBE_RETRY_AFTER_S,
    Attempt,
    CircuitBreaker,
    default_is_failure,
)

__all__ = ["PROBE_RETRY_AFTER_S", "Attempt", "CircuitBreaker", "default_is_failure"]
