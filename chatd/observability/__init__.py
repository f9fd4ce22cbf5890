"""Observability: structured logs (structlog), spans and Prometheus metrics.

Owns how chatd writes what it does; every other part only calls
``structlog.get_logger()``. Imports only ``chatd.config``.
"""

from chatd.observability.logging import configure_logging
from chatd.observability.metrics import Metrics
from chatd.observability.spans import RequestTrace, SpanHandle

__all__ = ["Metrics", "RequestTrace", "SpanHandle", "configure_logging"]
