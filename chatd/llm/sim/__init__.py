"""The built-in simulated LLM: a real OpenAI-compatible HTTP server (protocol.md §3).

It is chatd's LLM when none is configured, the target of the load tests and
the fault injector of the reliability tests. It imports nothing of chatd but
``chatd.config`` and ``chatd.exceptions``. Modules:

- ``http``: a small HTTP/1.1 server on trio and h11, with a reading task per
  connection so disconnects cancel responses at once;
- ``server``: the endpoints, the run-time state (:class:`SimServer`) and
  :func:`serve_sim_llm`;
- ``completions``: one completion answered, paced by due time;
- ``pacing``: one shared timer waking every stream due in the same 1 ms tick;
- ``wire``: OpenAI's JSON and SSE chunks, pre-encoded for the hot path;
- ``rules`` and ``small_talk``: what the model says, deterministically.

Endpoints:

- ``POST /v1/chat/completions`` (``stream`` true or false, ``tools``,
  ``tool_choice``, ``max_tokens``/``max_completion_tokens``,
  ``stream_options.include_usage``) and ``GET /v1/models``;
- ``GET /_sim/stats`` and ``POST /_sim/reset`` (zero the counters);
- ``GET``/``POST /_sim/timing`` ``{"ttft_ms"?, "tokens_per_s"?}``: the base timing;
- ``GET``/``POST /_sim/faults`` ``{"mode", "status"?, "ttft_ms"?, "tokens_per_s"?,
  "after_tokens"?}``;
- ``GET /_sim/last_request``: ``{"headers", "body"}`` of the last completion call.

Fault modes, applied to completion calls only:

- ``ok``: normal answers at the base timing;
- ``error``: answer at once with ``status`` (default 500) and an OpenAI-style
  error body;
- ``hang``: read the request and never answer;
- ``slow``: answer normally with the given ``ttft_ms`` and ``tokens_per_s``;
- ``cut`` (extension): close the connection after ``after_tokens`` (default 1)
  paced units (content tokens, or tool-call heads and argument pieces), with
  no terminating chunk and no ``[DONE]``; a non-streamed call is dropped
  without an answer;
- ``garbage`` (extension): after the first chunk, send one whose ``data:``
  line is not JSON, then carry on; a non-streamed call gets a non-JSON body.

Any mode but ``ok`` also applies ``ttft_ms`` and ``tokens_per_s`` when given.
"""

from chatd.llm.sim.completions import Fault, FaultMode, Timing
from chatd.llm.sim.rules import (
    Plan,
    Rules,
    TextPlan,
    ToolCall,
    ToolCallsPlan,
    default_rules,
    plan_reply,
    tokenize,
)
from chatd.llm.sim.rules_file import load_rules
from chatd.llm.sim.server import LastRequest, SimServer, SimStats, serve_sim_llm

__all__ = [
    "Fault",
    "FaultMode",
    "LastRequest",
    "Plan",
    "Rules",
    "SimServer",
    "SimStats",
    "TextPlan",
    "Timing",
    "ToolCall",
    "ToolCallsPlan",
    "default_rules",
    "load_rules",
    "plan_reply",
    "serve_sim_llm",
    "tokenize",
]
