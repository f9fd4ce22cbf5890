"""Observability: structured logs (structlog), spans and Prometheus metrics.

Owns how chatd writes what it does; every other part only calls
``structlog.get_logger()``. Imports only ``chatd.config``.
"""

from chatd.observability.logging import configure_logging
from chatd.observability.metrics import Metrics

__all__ = ["Metrics", "configure_logging"]
