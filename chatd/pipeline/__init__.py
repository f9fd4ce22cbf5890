"""The chat pipeline: admission, prepare, route, the three answer paths.

Owns a request's life from ``accepted`` to its one terminal event, and the
events it sends. Imports ``chatd.llm``, ``chatd.tools``, ``chatd.stores``,
``chatd.config`` and ``chatd.exceptions``; never ``chatd.server``.
"""

from chatd.pipeline.admission import Admission, AdmissionStatistics
from chatd.pipeline.chat import Pipeline
from chatd.pipeline.events import Event, encode, is_terminal
from chatd.pipeline.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from chatd.pipeline.request import ChatInput, RequestOutput

__all__ = [
    "Admission",
    "AdmissionStatistics",
    "ChatInput",
    "Event",
    "MemoryRateLimiter",
    "Pipeline",
    "RateLimiter",
    "RedisRateLimiter",
    "RequestOutput",
    "encode",
    "is_terminal",
]
