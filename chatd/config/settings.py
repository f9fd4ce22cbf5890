"""The settings tree: one frozen attrs class per TOML table.

Defaults run chatd on one machine with nothing else installed: the built-in
simulated LLM, a SQLite knowledge base, in-process memory for everything else.
Validators raise :class:`InvalidSetting` so the loader can name the key.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, Literal

import attrs


class InvalidSetting(ValueError):
    """A value that has the right type but is out of range or not allowed."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        super().__init__(f"{name} = {value!r}: expected {expected}")
        self.name = name
        self.value = value
        self.expected = expected


def _positive(_inst: object, attr: attrs.Attribute[Any], value: float | int) -> None:
    if value <= 0:
        raise InvalidSetting(attr.name, value, "a number greater than 0")


def _non_negative(_inst: object, attr: attrs.Attribute[Any], value: float | int) -> None:
    if value < 0:
        raise InvalidSetting(attr.name, value, "a number of 0 or more")


def _workers(_inst: object, attr: attrs.Attribute[Any], value: int | str) -> None:
    if value != "auto" and (not isinstance(value, int) or value <= 0):
        raise InvalidSetting(attr.name, value, 'a number greater than 0, or "auto"')


def _port(_inst: object, attr: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise InvalidSetting(attr.name, value, "a port number from 0 to 65535")


def _http_url(_inst: object, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise InvalidSetting(attr.name, value, "an http:// or https:// URL")


def _redis_url(_inst: object, attr: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidSetting(attr.name, value, "a redis:// URL")


def _networks(_inst: object, attr: attrs.Attribute[Any], value: list[str]) -> None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise InvalidSetting(
                attr.name, item, "an IP address or network (10.0.0.5, 10.0.0.0/8)"
            ) from None


@attrs.frozen
class ServerSettings:
    """Where and how the chat server listens.

    ``api_keys`` empty means no authentication; otherwise clients send one as
    ``Authorization: Bearer KEY`` (or ``?api_key=KEY`` on the WebSocket URL),
    and a WebSocket without a good key is closed at once (1008). Each key is
    the key or its hash, ``sha256:<hex>`` (``chatd keys new`` prints both).
    With any keys set, ``/metrics`` and ``/readyz``'s details need one of
    ``operator_keys`` (``/readyz``'s status and ``/healthz`` stay open).
    ``token_merge_ms`` is the window in which an answer's tokens are merged
    into one frame (the first token of an answer always goes out at once).
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=8080, validator=_port)
    api_keys: list[str] = attrs.field(factory=list)
    operator_keys: list[str] = attrs.field(factory=list)
    allowed_origins: list[str] = attrs.field(factory=list)
    """Web pages (``https://app.example``) that may open a WebSocket or post
    chats from a browser; ``"*"`` for any. Empty: chatd's own origin and
    loopback pages only (:mod:`chatd.server.origins`)."""
    resume_grace_s: float = attrs.field(default=30.0, validator=_non_negative)
    """How long a request sent as resumable outlives its client's connection,
    waiting for the client to resume it (and, once ended, stays resumable);
    0 turns resuming off. Other requests end with their connection."""
    trusted_proxies: list[str] = attrs.field(factory=list, validator=_networks)
    """Addresses or networks of reverse proxies in front of chatd: a request
    from one of them is from the address its ``X-Forwarded-For`` names (the
    nearest one that is not itself a trusted proxy). Empty: the header is
    ignored, as anyone can write it."""
    token_merge_ms: float = attrs.field(default=50.0, validator=_non_negative)
    send_queue: int = attrs.field(default=256, validator=_positive)
    """Events an HTTP (SSE) answer may have waiting for its client."""
    send_buffer_bytes: int = attrs.field(default=256 * 1024, validator=_positive)
    """Bytes a WebSocket may hold that its client has not read before the
    connection's requests wait for room (past four times that, no more of the
    client's frames are read until it reads)."""
    shutdown_grace_s: float = attrs.field(default=10.0, validator=_non_negative)
    websocket_ping_interval_s: float = attrs.field(default=20.0, validator=_positive)
    websocket_deflate: bool = False
    """Accept permessage-deflate when a client offers it (browsers do): off, as
    token frames are tiny and each compressed connection holds ~100 KiB more."""
    workers: int | Literal["auto"] = attrs.field(default=1, validator=_workers)
    """Processes serving the one listening socket (``"auto"``: one per core this
    process may run on); they share state through ``redis.url``."""
    worker_stop_margin_s: float = attrs.field(default=5.0, validator=_non_negative)
    """With ``workers`` above 1: how long past ``shutdown_grace_s`` a worker asked
    to stop (SIGTERM) may take to close its connections and exit before the
    supervisor kills it (SIGKILL) and exits 1. Keep their sum below your process
    manager's stop timeout (systemd's ``TimeoutStopSec``, Kubernetes'
    ``terminationGracePeriodSeconds``)."""

    @property
    def worker_count(self) -> int:
        """:attr:`workers` as a number."""
        if self.workers == "auto":
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        return self.workers


@attrs.frozen
class LLMTimeouts:
    """Per-phase limits on one LLM call, in seconds."""

    connect_s: float = attrs.field(default=5.0, validator=_positive)
    ttft_s: float = attrs.field(default=30.0, validator=_positive)
    gap_s: float = attrs.field(default=30.0, validator=_positive)
    total_s: float = attrs.field(default=300.0, validator=_positive)


@attrs.frozen
class LLMFallbackSettings:
    """Another endpoint, used in order when those before it have their breaker open;
    ``model`` and ``api_key`` default to the primary's."""

    url: str = attrs.field(validator=_http_url)
    model: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class LLMSettings:
    """The OpenAI-compatible endpoint; no ``url`` means the built-in simulator.

    A call that fails before its first event is retried up to ``retries``
    times with jittered exponential backoff from ``retry_backoff_s``, never
    while the endpoint's breaker is open (a fallback takes over, if any).
    """

    url: str | None = attrs.field(default=None, validator=_http_url)
    model: str = "chatd-sim"
    api_key: str | None = attrs.field(default=None, repr=False)
    extra_headers: dict[str, str] = attrs.field(factory=dict)
    timeouts: LLMTimeouts = attrs.field(factory=LLMTimeouts)
    max_connections: int = attrs.field(default=1000, validator=_positive)
    """Connections to the endpoint open at once (a call waits for one beyond that)."""
    coalesce_ms: float = attrs.field(default=50.0, validator=_non_negative)
    """A stream whose pieces come faster than this reads them this far apart, so
    one read (and one frame to the client) carries several; the first piece of
    an answer is never delayed. 0 reads each piece as it arrives."""
    retries: int = attrs.field(default=2, validator=_non_negative)
    retry_backoff_s: float = attrs.field(default=0.1, validator=_non_negative)
    fallbacks: list[LLMFallbackSettings] = attrs.field(factory=list)


@attrs.frozen
class SimSettings:
    """The built-in simulated LLM's timing and rules (protocol.md §3)."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=0, validator=_port)
    ttft_ms: float = attrs.field(default=300.0, validator=_non_negative)
    tokens_per_s: float = attrs.field(default=40.0, validator=_positive)
    rules: str | None = None


@attrs.frozen
class KBSettings:
    """The knowledge base behind ``frequently_asked``."""

    backend: Literal["sqlite", "arango"] = "sqlite"
    path: str = "chatd-kb.sqlite3"
    arango_url: str | None = attrs.field(default=None, validator=_http_url)
    arango_database: str = "chatd"
    arango_username: str = "root"
    arango_password: str | None = attrs.field(default=None, repr=False)
    arango_collection: str = "faq"
    threads: int = attrs.field(default=16, validator=_positive)
    """Worker threads for ArangoDB calls, and the size of its HTTP pool."""
    timeout_s: float = attrs.field(default=5.0, validator=_positive)
    """How long one ArangoDB request may take before it fails."""


@attrs.frozen
class RedisSettings:
    """Shared state; no ``url`` means in-process memory."""

    url: str | None = attrs.field(default=None, validator=_redis_url)
    threads: int = attrs.field(default=32, validator=_positive)
    """Worker threads for Redis calls, and the size of the connection pool."""
    socket_timeout_s: float = attrs.field(default=2.0, validator=_positive)
    """How long one Redis command may block a thread before it fails."""
    prefix: str = "chatd:"
    """Put before every key, so several deployments can share one Redis."""
    flight_lease_s: float = attrs.field(default=5.0, validator=_positive)
    """How long a flight's lease lasts unless its leader renews it; a leader
    that dies lets another instance take the flight over after this long."""


@attrs.frozen
class LimitsSettings:
    """Capacity and admission."""

    prepare: int = attrs.field(default=64, validator=_positive)
    llm_streams: int = attrs.field(default=1000, validator=_positive)
    max_queue: int = attrs.field(default=1000, validator=_non_negative)
    queue_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    max_message_chars: int = attrs.field(default=8000, validator=_positive)
    max_answer_chars: int = attrs.field(default=100_000, validator=_positive)
    """An answer is cut here (``finish_reason`` ``length``, its LLM call closed):
    whatever the LLM does, one answer's memory is bounded."""
    max_frame_bytes: int = attrs.field(default=65536, validator=_positive)
    request_timeout_s: float = attrs.field(default=120.0, validator=_positive)
    prompt_token_budget: int = attrs.field(default=6000, validator=_positive)
    max_requests_per_connection: int = attrs.field(default=64, validator=_positive)
    max_requests_per_client: int = attrs.field(default=256, validator=_positive)
    """Requests in flight from one client (its API key, else its address) over
    all its connections and HTTP requests; past it, ``overloaded``. Clients
    known only by a loopback address (a local proxy or load test may stand for
    many users) are not capped per client: give them keys."""
    max_connections: int = attrs.field(default=20000, validator=_positive)
    """WebSockets open at once; past it, a new one hears ``overloaded`` and is
    closed (1013, try again later)."""
    max_connections_per_client: int = attrs.field(default=256, validator=_positive)
    """WebSockets one client may hold open at once (the same refusal; loopback
    addresses are exempt, as above)."""
    rate_per_minute: float = attrs.field(default=0.0, validator=_non_negative)
    """Chat requests a client (its API key, else its address) may start per
    minute, with bursts of up to one minute's worth; 0 means no limit."""
    tokens_per_day: int = attrs.field(default=0, validator=_non_negative)
    """Prompt and completion tokens a client (its API key, else its address)
    may use per UTC day, as its answers' ``usage`` counts them (a cached answer
    is free); a chat that starts within it may overrun it, the next is
    ``rate_limited`` until midnight UTC. 0 means no budget."""


@attrs.frozen
class HTTPToolSettings:
    """A declarative HTTP tool: the LLM fills ``parameters``; chatd calls ``url``.

    ``url`` and header values are templates: ``{name}`` is replaced by the
    URL-quoted argument ``name``. With ``method`` POST the arguments are sent
    as the JSON body.
    """

    name: str
    description: str
    url: str = attrs.field(validator=_http_url)
    method: Literal["GET", "POST", "PUT", "DELETE"] = "GET"
    parameters: dict[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})
    headers: dict[str, str] = attrs.field(factory=dict)
    timeout_s: float = attrs.field(default=10.0, validator=_positive)
    time_bound: bool = False
    user_bound: bool = False


@attrs.frozen
class ToolsSettings:
    """Tool timeouts and the declarative HTTP tools."""

    timeout_s: float = attrs.field(default=10.0, validator=_positive)
    faq_min_confidence: float = attrs.field(default=0.75, validator=_non_negative)
    http: list[HTTPToolSettings] = attrs.field(factory=list)


@attrs.frozen
class JanitorSettings:
    """The janitor's sweep and the deadline of every non-terminal request state.

    A request stuck in a state past its deadline is cancelled and told
    ``timeout``; a client whose frames have not been taken for
    ``stalled_client_s`` is disconnected; a connection with no requests and no
    frames for ``idle_connection_s`` is closed.
    """

    interval_s: float = attrs.field(default=1.0, validator=_positive)
    queued_s: float = attrs.field(default=30.0, validator=_positive)
    preparing_s: float = attrs.field(default=10.0, validator=_positive)
    routing_s: float = attrs.field(default=60.0, validator=_positive)
    tools_s: float = attrs.field(default=60.0, validator=_positive)
    streaming_s: float = attrs.field(default=300.0, validator=_positive)
    stalled_client_s: float = attrs.field(default=30.0, validator=_positive)
    idle_connection_s: float = attrs.field(default=60.0, validator=_positive)
    gc_interval_s: float = attrs.field(default=300.0, validator=_positive)
    """How often ``chatd serve`` runs Python's cycle collector, which it keeps
    from running on its own (chatd.server.heap: each pause held every stream)."""

    def stuck_after_s(self, state: str) -> float:
        """How long a request may stay in ``state`` (queued, preparing, routing,
        tools or streaming) before it is reaped."""
        return {
            "queued": self.queued_s,
            "preparing": self.preparing_s,
            "routing": self.routing_s,
            "tools": self.tools_s,
            "streaming": self.streaming_s,
        }[state]


@attrs.frozen
class CacheSettings:
    """The answer cache: finished, shareable answers replayed to identical questions."""

    enabled: bool = True
    ttl_s: float = attrs.field(default=300.0, validator=_positive)
    max_entries: int = attrs.field(default=10_000, validator=_positive)
    max_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive)
    """What the in-process cache may hold, as encoded events; past it the least
    recently used entries go (Redis keeps its own under its ``maxmemory``)."""


@attrs.frozen
class FlightsSettings:
    """Shared flights: identical questions in flight share one LLM call."""

    enabled: bool = True


@attrs.frozen
class BreakerSettings:
    """One circuit breaker: when it opens, how long it stays open, how it probes.

    It opens after ``failure_threshold`` consecutive failures, or, when
    ``failure_ratio`` is set, when at least ``min_calls`` calls in the last
    ``window_s`` seconds failed at that ratio or more.
    """

    failure_threshold: int = attrs.field(default=5, validator=_positive)
    open_timeout_s: float = attrs.field(default=30.0, validator=_positive)
    half_open_max_calls: int = attrs.field(default=1, validator=_positive)
    failure_ratio: float | None = None
    window_s: float = attrs.field(default=60.0, validator=_positive)
    min_calls: int = attrs.field(default=20, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.failure_ratio is not None and not 0 < self.failure_ratio <= 1:
            raise InvalidSetting("failure_ratio", self.failure_ratio, "a number in (0, 1]")


@attrs.frozen
class BreakersSettings:
    """A breaker per dependency."""

    llm: BreakerSettings = attrs.field(factory=BreakerSettings)
    kb: BreakerSettings = attrs.field(factory=BreakerSettings)
    redis: BreakerSettings = attrs.field(factory=BreakerSettings)


@attrs.frozen
class LogSettings:
    """Where logs go and what they may contain."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    file: str | None = None
    include_text: bool = False


@attrs.frozen
class Settings:
    """Everything chatd reads at start-up."""

    server: ServerSettings = attrs.field(factory=ServerSettings)
    llm: LLMSettings = attrs.field(factory=LLMSettings)
    sim: SimSettings = attrs.field(factory=SimSettings)
    kb: KBSettings = attrs.field(factory=KBSettings)
    redis: RedisSettings = attrs.field(factory=RedisSettings)
    limits: LimitsSettings = attrs.field(factory=LimitsSettings)
    tools: ToolsSettings = attrs.field(factory=ToolsSettings)
    breakers: BreakersSettings = attrs.field(factory=BreakersSettings)
    cache: CacheSettings = attrs.field(factory=CacheSettings)
    flights: FlightsSettings = attrs.field(factory=FlightsSettings)
    janitor: JanitorSettings = attrs.field(factory=JanitorSettings)
    log: LogSettings = attrs.field(factory=LogSettings)
    system_prompt: str = (
        "You are chatd's assistant. Answer briefly and use the tools you are given."
    )
