"""Tools the LLM can call, and running those calls safely.

Owns the :class:`Tool` protocol and its result types (``base``), argument
checking against a tool's JSON schema (``schema``), the registry that runs
calls concurrently under timeouts and turns every failure into a readable
``ToolOutcome`` (``registry``), and the built-in tools: ``calculator``,
``clock`` and the declarative HTTP tools from config (``http``).

Imports only ``chatd.config``, ``chatd.exceptions``, ``chatd.llm.types`` and
``chatd.stores``; the pipeline imports this package, never the reverse.
"""

from chatd.tools.base import Tool, ToolContext, ToolResult, stream_text
from chatd.tools.calculator import Calculator, calculate
from chatd.tools.clock import Clock
from chatd.tools.http import HTTPTool, http_tools
from chatd.tools.registry import OnToolEnd, OnToolStart, ToolOutcome, ToolRegistry
from chatd.tools.schema import validate

__all__ = [
    "Calculator",
    "Clock",
    "HTTPTool",
    "OnToolEnd",
    "OnToolStart",
    "Tool",
    "ToolContext",
    "ToolOutcome",
    "ToolRegistry",
    "ToolResult",
    "calculate",
    "http_tools",
    "stream_text",
    "validate",
]
