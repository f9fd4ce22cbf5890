"""Observability: structured logs (structlog), later spans and metrics.

Owns how chatd writes what it does; every other part only calls
``structlog.get_logger()``. Imports only ``chatd.config``.
"""

from chatd.observability.logging import configure_logging

__all__ = ["configure_logging"]
