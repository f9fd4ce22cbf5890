"""Talking to LLMs: the OpenAI-compatible client and the simulated LLM.

Owns the wire format (SSE decoding, chunk assembly), the httpx client with
its per-phase deadlines, and ``chatd.llm.sim``, the built-in simulator.
Imports only ``chatd.config`` and ``chatd.exceptions``.
"""

from chatd.llm.client import LLMClient, open_llm_client
from chatd.llm.stream import LLMStream
from chatd.llm.types import (
    ChatEvent,
    ChatRequest,
    Completion,
    Message,
    TextDelta,
    ToolCall,
    ToolCallBegin,
    Usage,
)

__all__ = [
    "ChatEvent",
    "ChatRequest",
    "Completion",
    "LLMClient",
    "LLMStream",
    "Message",
    "TextDelta",
    "ToolCall",
    "ToolCallBegin",
    "Usage",
    "open_llm_client",
]
