"""The simulator's endpoints, its run-time state, and :func:`serve_sim_llm`.

:class:`SimServer` is the handle :func:`serve_sim_llm` hands to
``nursery.start``: its address, its statistics, and the same controls the
``/_sim/*`` endpoints offer, for in-process tests. Faults and timing apply to
completion calls only; the ``/_sim/*`` endpoints always answer at once.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import attrs
import orjson
import trio

from chatd.config import SimSettings
from chatd.llm.sim import wire
from chatd.llm.sim.completions import (
    FAULT_MODES,
    BadRequest,
    Fault,
    FaultMode,
    Timing,
    answer_completion,
    parse_completion_request,
)
from chatd.llm.sim.http import Exchange, serve_http
from chatd.llm.sim.pacing import Pacer
from chatd.llm.sim.rules import Rules, default_rules, plan_reply
from chatd.llm.sim.rules_file import load_rules
from chatd.redaction import redact

__all__ = ["SimServer", "SimStats", "serve_sim_llm"]

_Endpoint = Callable[["SimServer", Exchange], Awaitable[None]]


@attrs.frozen
class SimStats:
    """A snapshot of the simulator's counters (``GET /_sim/stats``).

    ``requests``: completion requests received; ``active``: completion
    responses under way; ``completed``: answers sent to the end;
    ``client_disconnects``: completion responses whose client went away
    before the end.
    """

    requests: int = 0
    active: int = 0
    completed: int = 0
    client_disconnects: int = 0


@attrs.frozen
class LastRequest:
    """The last completion request: its headers (names lower-cased) and JSON body."""

    headers: dict[str, str] = attrs.field(factory=dict)
    body: Any = None


@attrs.define(eq=False)
class SimServer:
    """A running simulated LLM: where it listens, what it counts, how it misbehaves."""

    host: str
    port: int
    _timing: Timing = attrs.field(alias="timing")
    rules: Rules = attrs.field(factory=default_rules)
    _fault: Fault = attrs.field(factory=Fault, init=False)
    _last_request: LastRequest = attrs.field(factory=LastRequest, init=False)
    _pacer: Pacer = attrs.field(factory=Pacer, init=False)
    _requests: int = attrs.field(default=0, init=False)
    _active: int = attrs.field(default=0, init=False)
    _completed: int = attrs.field(default=0, init=False)
    _client_disconnects: int = attrs.field(default=0, init=False)

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://HOST:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def stats(self) -> SimStats:
        """The counters now; same as :meth:`statistics`."""
        return self.statistics()

    @property
    def timing(self) -> Timing:
        """The base timing (faults may override it per call)."""
        return self._timing

    @property
    def fault(self) -> Fault:
        """The fault in force."""
        return self._fault

    @property
    def last_request(self) -> LastRequest:
        """The last completion request received."""
        return self._last_request

    def statistics(self) -> SimStats:
        """The counters now, as a frozen snapshot."""
        return SimStats(
            requests=self._requests,
            active=self._active,
            completed=self._completed,
            client_disconnects=self._client_disconnects,
        )

    def reset_stats(self) -> None:
        """Zero the counters, except ``active``: it counts what is really under way."""
        self._requests = self._completed = self._client_disconnects = 0

    def set_timing(
        self, *, ttft_ms: float | None = None, tokens_per_s: float | None = None
    ) -> None:
        """Change the base timing; omitted values stay as they are."""
        _check_timing(ttft_ms, tokens_per_s)
        self._timing = Timing(
            self._timing.ttft_ms if ttft_ms is None else float(ttft_ms),
            self._timing.tokens_per_s if tokens_per_s is None else float(tokens_per_s),
        )

    def set_fault(
        self,
        mode: FaultMode,
        status: int | None = None,
        ttft_ms: float | None = None,
        tokens_per_s: float | None = None,
        after_tokens: int | None = None,
    ) -> None:
        """Inject a fault into every completion call from now on; ``"ok"`` clears it."""
        if mode not in FAULT_MODES:
            raise ValueError(f"fault mode must be one of {', '.join(FAULT_MODES)}, not {mode!r}")
        if status is not None and not (_is_int(status) and 400 <= status <= 599):
            raise ValueError(f"status must be an HTTP error status, 400 to 599, not {status!r}")
        if after_tokens is not None and not (_is_int(after_tokens) and after_tokens >= 1):
            raise ValueError(f"after_tokens must be an integer of 1 or more, not {after_tokens!r}")
        _check_timing(ttft_ms, tokens_per_s)
        if mode == "ok":
            self._fault = Fault()
            return
        self._fault = Fault(
            mode=mode,
            status=500 if status is None else status,
            ttft_ms=None if ttft_ms is None else float(ttft_ms),
            tokens_per_s=None if tokens_per_s is None else float(tokens_per_s),
            after_tokens=1 if after_tokens is None else after_tokens,
        )

    async def handle(self, exchange: Exchange) -> None:
        """Route one HTTP request to its endpoint."""
        request = exchange.request
        methods = _ROUTES.get(request.path)
        if methods is None:
            message = f"no route for {request.method} {request.path}"
            await exchange.respond(
                404, wire.error_body(message, "invalid_request_error", "not_found")
            )
            return
        endpoint = methods.get(request.method)
        if endpoint is None:
            allowed = ", ".join(sorted(methods)).encode()
            message = f"{request.method} is not allowed on {request.path}"
            body = wire.error_body(message, "invalid_request_error", "method_not_allowed")
            await exchange.respond(405, body, headers=[(b"allow", allowed)])
            return
        await endpoint(self, exchange)

    async def _completions(self, exchange: Exchange) -> None:
        arrived = trio.current_time()
        self._requests += 1
        try:
            request = parse_completion_request(exchange.request.body)
        except BadRequest as exc:
            self._last_request = LastRequest(_header_dict(exchange), None)
            body = wire.error_body(exc.message, "invalid_request_error", None)
            await exchange.respond(400, body)
            return
        self._last_request = LastRequest(_header_dict(exchange), request.body)
        fault = self._fault
        plan = plan_reply(request.body, self.rules)
        self._active += 1
        completed = False
        try:
            completed = await answer_completion(
                exchange,
                request,
                plan,
                timing=fault.timing(self._timing),
                fault=fault,
                arrived=arrived,
                pacer=self._pacer,
            )
        finally:
            self._active -= 1
            if completed:
                self._completed += 1
            elif exchange.client_gone:
                self._client_disconnects += 1

    async def _models(self, exchange: Exchange) -> None:
        model = {"id": "chatd-sim", "object": "model", "created": 0, "owned_by": "chatd"}
        await exchange.respond(200, orjson.dumps({"object": "list", "data": [model]}))

    async def _stats_endpoint(self, exchange: Exchange) -> None:
        await exchange.respond(200, orjson.dumps(attrs.asdict(self.statistics())))

    async def _reset(self, exchange: Exchange) -> None:
        self.reset_stats()
        await exchange.respond(200, orjson.dumps(attrs.asdict(self.statistics())))

    async def _last_request_endpoint(self, exchange: Exchange) -> None:
        last = self._last_request  # shown without the credentials it carried
        headers = {name: redact(value) for name, value in last.headers.items()}
        await exchange.respond(200, orjson.dumps({"headers": headers, "body": last.body}))

    async def _faults(self, exchange: Exchange) -> None:
        allowed = {"mode", "status", "ttft_ms", "tokens_per_s", "after_tokens"}
        if await _apply_control(exchange, self.set_fault, allowed, required={"mode"}):
            await exchange.respond(200, orjson.dumps(attrs.asdict(self._fault)))

    async def _timing_endpoint(self, exchange: Exchange) -> None:
        if await _apply_control(exchange, self.set_timing, {"ttft_ms", "tokens_per_s"}):
            await exchange.respond(200, orjson.dumps(attrs.asdict(self._timing)))


def _header_dict(exchange: Exchange) -> dict[str, str]:
    headers = exchange.request.headers
    return {name: exchange.request.header(name) or "" for name, _ in headers}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_timing(ttft_ms: float | None, tokens_per_s: float | None) -> None:
    if ttft_ms is not None and not (
        isinstance(ttft_ms, int | float)
        and not isinstance(ttft_ms, bool)
        and 0 <= ttft_ms < math.inf
    ):
        raise ValueError(f"ttft_ms must be a number of 0 or more, not {ttft_ms!r}")
    if tokens_per_s is not None and not (
        isinstance(tokens_per_s, int | float)
        and not isinstance(tokens_per_s, bool)
        and 0 < tokens_per_s < math.inf
    ):
        raise ValueError(f"tokens_per_s must be a number greater than 0, not {tokens_per_s!r}")


async def _apply_control(
    exchange: Exchange,
    setter: Callable[..., None],
    allowed: set[str],
    required: frozenset[str] | set[str] = frozenset(),
) -> bool:
    """Call ``setter`` with the JSON object of a ``/_sim`` POST; False after answering 400.

    A GET sets nothing and is answered with the current settings.
    """
    if exchange.request.method != "POST":
        return True
    try:
        fields = orjson.loads(exchange.request.body or b"{}")
    except orjson.JSONDecodeError as exc:
        await _bad_control(exchange, f"request body is not valid JSON: {exc}")
        return False
    if not isinstance(fields, dict):
        await _bad_control(exchange, "request body must be a JSON object")
        return False
    unknown = set(fields) - allowed
    missing = set(required) - set(fields)
    if unknown or missing:
        problem = (
            f"unknown field {sorted(unknown)[0]!r}"
            if unknown
            else f"missing {sorted(missing)[0]!r}"
        )
        await _bad_control(exchange, problem)
        return False
    try:
        setter(**fields)
    except (TypeError, ValueError) as exc:
        await _bad_control(exchange, str(exc))
        return False
    return True


async def _bad_control(exchange: Exchange, message: str) -> None:
    await exchange.respond(400, wire.error_body(message, "invalid_request_error", None))


_ROUTES: dict[str, dict[str, _Endpoint]] = {
    "/v1/chat/completions": {"POST": SimServer._completions},
    "/v1/models": {"GET": SimServer._models},
    "/_sim/stats": {"GET": SimServer._stats_endpoint},
    "/_sim/reset": {"POST": SimServer._reset},
    "/_sim/faults": {"GET": SimServer._faults, "POST": SimServer._faults},
    "/_sim/timing": {"GET": SimServer._timing_endpoint, "POST": SimServer._timing_endpoint},
    "/_sim/last_request": {"GET": SimServer._last_request_endpoint},
}


async def serve_sim_llm(
    settings: SimSettings,
    *,
    task_status: trio.TaskStatus[SimServer] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run the simulated LLM on ``settings.host:settings.port`` until cancelled.

    Port 0 picks a free port. Calls ``task_status.started`` with the
    :class:`SimServer` handle once listening. Cancelling closes every
    connection. A bad rules file raises :class:`~chatd.exceptions.ConfigError`
    before anything listens.
    """
    rules = load_rules(settings.rules) if settings.rules else default_rules()
    listeners = await trio.open_tcp_listeners(settings.port, host=settings.host)
    if settings.port == 0:
        # A host with several addresses gets one free port per listener:
        # keep one, so the handle's port is the only one there is.
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    sim = SimServer(
        host=settings.host,
        port=listeners[0].socket.getsockname()[1],
        rules=rules,
        timing=Timing(settings.ttft_ms, settings.tokens_per_s),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sim._pacer.run)
        await nursery.start(serve_http, sim.handle, listeners)
        task_status.started(sim)
    raise AssertionError("serve_http returned")  # pragma: no cover
