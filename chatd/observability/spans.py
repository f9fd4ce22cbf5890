"""Request spans: where one request's time went, written as structlog lines.

A :class:`RequestTrace` belongs to one request, which ends in one ``"request
summary"`` line carrying every span it timed (``spans``: a list of the span
lines below, less the fields every line has); with ``log_spans`` (chatd sets
it at ``log.level = "debug"``) each span is also logged as it ends, as its
own line (event ``"span"``). ``chatd trace`` reads either back. Nothing is
logged per token, and the text of messages and answers only with
``include_text`` (``log.include_text``). A span costs one dict (its
attributes, which become its line) and one small record kept for the
summary; a logged span one log call more (~12 µs with JSON rendering).

Span line fields: ``request_id``, ``span`` (name), ``span_id``, ``parent_id``,
``start`` (ms after the request started), ``duration_ms``, ``outcome`` (``ok``,
``error`` or ``cancelled``), ``error`` (``"Class: message"``, on errors), then
the span's attributes. Ids are small integers, unique within the request. The
request itself is the root span, id 0: it is never written as a span line, its
summary line stands for it (start 0, ``total_ms``, the request's outcome).

Imports nothing of chatd.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple, Protocol

import attrs
import structlog
import trio

__all__ = ["ROOT_SPAN_ID", "TEXT_FIELDS", "RequestTrace", "SpanHandle", "describe_outcome"]

ROOT_SPAN_ID: Final = 0
"""The request's own span: the default parent of spans nothing else encloses."""

TEXT_FIELDS: Final = frozenset({"message", "answer"})
"""Fields that carry what users wrote or were told: dropped unless ``include_text``."""

_RESERVED: Final = frozenset({"event", "request_id"})


class SpanLogger(Protocol):
    """What a trace needs of a logger: structlog's ``info``."""

    def info(self, event: str, **fields: Any) -> Any:
        """Log one line."""
        ...


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _current_task() -> trio.lowlevel.Task | None:
    try:
        return trio.lowlevel.current_task()
    except RuntimeError:  # outside trio (a test with a fake clock): one flat stack
        return None


def describe_outcome(exc: BaseException | None) -> tuple[str, str | None]:
    """``(outcome, error)`` for how a span ended: ``trio.Cancelled`` or a group of
    nothing else is ``cancelled``; any other exception is an ``error``, described
    as ``"Class: message"`` (the first leaf that is not a cancellation)."""
    if exc is None:
        return "ok", None
    if isinstance(exc, trio.Cancelled):
        return "cancelled", None
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        if rest is None:
            return "cancelled", None
        exc = rest
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
    message = str(exc)
    return "error", f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@attrs.define(eq=False)
class SpanHandle:
    """One span: a sync context manager (usable around ``await``) and the handle
    to add attributes while it runs. Made by :meth:`RequestTrace.span`; single use.

    After the span ends, :attr:`attributes` holds the line that was logged.
    """

    trace: RequestTrace
    name: str
    attributes: dict[str, Any]
    parent: SpanHandle | None = None
    """The explicit parent, if one was given."""
    span_id: int = attrs.field(default=-1, init=False)
    parent_id: int | None = attrs.field(default=None, init=False)
    start: float = attrs.field(default=0.0, init=False)
    end: float | None = attrs.field(default=None, init=False)
    _task: trio.lowlevel.Task | None = attrs.field(default=None, init=False)
    _failure: str | None = attrs.field(default=None, init=False)

    def set(self, **attributes: Any) -> None:
        """Add attributes to the span's line (token counts, a breaker's state)."""
        self.attributes.update(attributes)

    def mark(self, key: str = "ttft_ms") -> None:
        """Set ``key`` to the ms since the span started, the first time only:
        call it on every streamed event, it keeps the first (one dict lookup)."""
        if key not in self.attributes:
            self.attributes[key] = _ms(self.trace.clock() - self.start)

    def fail(self, error: str) -> None:
        """End as an ``error`` although no exception leaves the span (a failure
        handled inside it). An exception leaving the span still wins."""
        self._failure = error

    def __enter__(self) -> SpanHandle:
        if self.span_id != -1:
            raise RuntimeError(f"span {self.name!r} was already entered")
        self.trace._open(self, self.trace.clock(), push=True)
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _traceback: object) -> None:
        self.trace._close(self)
        outcome, error = describe_outcome(exc)
        if outcome == "ok" and self._failure is not None:
            outcome, error = "error", self._failure
        self.trace._finish(self, self.trace.clock(), outcome, error)


@attrs.define(eq=False)
class RequestTrace:
    """The spans and the summary of one request, logged as they end.

    ``clock`` must be the clock the callers' times come from (trio's by default,
    so ``autojump_clock`` gives exact offsets). ``log`` defaults to structlog's
    logger ``chatd.trace``. :attr:`started` is when the trace was made: the
    request's time zero.

    **Parents.** A span's parent is, in order: the ``parent`` passed to
    :meth:`span` or :meth:`record`; else the innermost span of this trace still
    open in the current task; else the innermost one open in the nearest
    ancestor task (the task whose nursery started this one, and so up), which
    is what places each tool of a nursery under the ``tools`` span its parent
    task has open, however the tools interleave; else the root (the request).
    Open spans are kept on one stack per task, so concurrent tasks never see
    each other's spans: a task never guesses among its siblings'. A task from
    a nursery outside the request (a shared flight's) finds no ancestor with an
    open span and gets the root, unless its work runs :meth:`under` a span of
    the request. An ancestor's span is the one open when the child's starts.
    """

    request_id: str
    clock: Callable[[], float] = trio.current_time
    log: SpanLogger | None = None
    include_text: bool = False
    log_spans: bool = True
    """Log each span as it ends, besides listing it in the summary."""
    started: float = attrs.field(init=False)
    _next_id: int = attrs.field(default=ROOT_SPAN_ID, init=False)
    # Open spans point at the trace; ended ones are kept as plain records, so a
    # finished trace is freed by reference counting, never left to the collector.
    _stacks: dict[trio.lowlevel.Task | None, list[SpanHandle]] = attrs.field(
        factory=dict, init=False
    )
    _ended: list[_Ended] = attrs.field(factory=list, init=False)
    _lines: list[dict[str, Any]] = attrs.field(factory=list, init=False)
    _logger: SpanLogger = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.started = self.clock()
        self._logger = self.log if self.log is not None else structlog.get_logger("chatd.trace")

    @property
    def root(self) -> SpanHandle:
        """The request's span (id 0): pass as ``parent`` to force a top-level span."""
        root = SpanHandle(self, "request", {})
        root.span_id, root.start = ROOT_SPAN_ID, self.started
        return root

    def span(self, name: str, *, parent: SpanHandle | None = None, **attributes: Any) -> SpanHandle:
        """A span named ``name``, timed from entering to leaving the ``with``;
        its outcome is how the block ended (see :func:`describe_outcome`)."""
        return SpanHandle(self, name, attributes, parent)

    def record(
        self,
        name: str,
        start: float,
        end: float,
        *,
        parent: SpanHandle | None = None,
        outcome: str = "ok",
        error: str | None = None,
        **attributes: Any,
    ) -> SpanHandle:
        """Log a span measured after the fact, ``start`` and ``end`` on
        :attr:`clock` (a queue wait, a tool from its outcome, the token stream);
        its parent is found as for :meth:`span`, at the time of this call."""
        handle = SpanHandle(self, name, attributes, parent)
        self._open(handle, start, push=False)
        self._finish(handle, end, outcome, error)
        return handle

    def record_wait(self, waited: float, limiter: str) -> None:
        """A ``queue`` span for a wait for a slot that ended just now, if there was one."""
        if waited > 0:
            now = self.clock()
            self.record("queue", now - waited, now, limiter=limiter)

    def summary(self, **fields: Any) -> dict[str, Any]:
        """Log the ``request summary`` line and return it.

        Callers pass what they know: ``path``, ``outcome`` (``done``,
        ``cancelled`` or an error code), ``shared``, ``cached``, ``tokens`` and
        any timing. Timings not passed are derived from the spans that ended:
        ``total_ms`` (now − :attr:`started`), ``queue_ms`` (all ``queue`` spans),
        ``prepare_ms`` (``prepare`` less its ``queue`` children), ``router_ttft_ms``
        and ``answer_ttft_ms`` (the ``ttft_ms`` mark of ``router``/``answer``),
        ``tools_ms`` (the ``tools`` span, else the extent of the ``tool`` spans)
        and ``first_token_ms`` (the start of ``stream``). What cannot be
        derived is left out. ``message`` and ``answer`` only with ``include_text``.
        """
        line: dict[str, Any] = {"request_id": self.request_id, **fields}
        for key, value in self._derived_timings().items():
            line.setdefault(key, value)
        line.setdefault("spans", self._lines)
        if not self.include_text:
            for key in TEXT_FIELDS.intersection(line):
                del line[key]
        self._logger.info("request summary", **line)
        return line

    @contextlib.contextmanager
    def under(self, parent: SpanHandle) -> Iterator[SpanHandle]:
        """Make ``parent`` (a span open in another task) the innermost open span
        of this task, and so of the tasks it starts, for the block; times and logs
        nothing. For work done on the request's behalf in a nursery it does not
        own: a shared flight's task runs under the creator's ``flight`` span."""
        task = _current_task()
        stack = self._stacks.setdefault(task, [])
        stack.append(parent)
        try:
            yield parent
        finally:
            if stack[-1] is parent:
                stack.pop()
            else:  # pragma: no cover - a span entered inside and never left
                stack.remove(parent)
            if not stack:
                del self._stacks[task]

    def _open(self, handle: SpanHandle, start: float, *, push: bool) -> None:
        task = _current_task()
        parent = handle.parent or self._innermost(task)
        self._next_id += 1
        handle.span_id = self._next_id
        handle.parent_id = ROOT_SPAN_ID if parent is None else parent.span_id
        handle.start = start
        if push:
            handle._task = task
            self._stacks.setdefault(task, []).append(handle)

    def _innermost(self, task: trio.lowlevel.Task | None) -> SpanHandle | None:
        if not self._stacks:
            return None
        while task is not None:
            stack = self._stacks.get(task)
            if stack:
                return stack[-1]
            nursery = task.parent_nursery
            task = nursery.parent_task if nursery is not None else None
        stack = self._stacks.get(None)
        return stack[-1] if stack else None

    def _close(self, handle: SpanHandle) -> None:
        stack = self._stacks.get(handle._task)
        if not stack:  # pragma: no cover - a span left twice
            return
        if stack[-1] is handle:
            stack.pop()
        elif handle in stack:  # left out of order (an ExitStack misused): still unlink it
            stack.remove(handle)
        if not stack:
            del self._stacks[handle._task]

    def _finish(self, handle: SpanHandle, end: float, outcome: str, error: str | None) -> None:
        handle.end = end
        line = handle.attributes
        if not _RESERVED.isdisjoint(line):
            for key in _RESERVED.intersection(line):
                del line[key]
        if not self.include_text and not TEXT_FIELDS.isdisjoint(line):
            for key in TEXT_FIELDS.intersection(line):
                del line[key]
        line["span"] = name = handle.name
        line["span_id"] = handle.span_id
        line["parent_id"] = handle.parent_id
        line["start"] = _ms(handle.start - self.started)
        line["duration_ms"] = _ms(end - handle.start)
        line["outcome"] = outcome
        if error is not None:
            line["error"] = error
        self._ended.append(
            _Ended(name, handle.span_id, handle.parent_id, handle.start, end, line.get("ttft_ms"))
        )
        self._lines.append(line)
        if self.log_spans:
            self._logger.info("span", request_id=self.request_id, **line)

    def _derived_timings(self) -> dict[str, float]:
        timings = {"total_ms": _ms(self.clock() - self.started)}
        queued = [e for e in self._ended if e.name == "queue"]
        if queued:
            timings["queue_ms"] = _ms(sum(e.end - e.start for e in queued))
        tools: list[_Ended] = []
        for e in self._ended:
            if e.name == "prepare" and "prepare_ms" not in timings:
                waits = sum(q.end - q.start for q in queued if q.parent_id == e.span_id)
                timings["prepare_ms"] = _ms(e.end - e.start - waits)
            elif e.name in ("router", "answer") and e.ttft_ms is not None:
                timings.setdefault(f"{e.name}_ttft_ms", e.ttft_ms)
            elif e.name == "tools":
                timings.setdefault("tools_ms", _ms(e.end - e.start))
            elif e.name == "tool":
                tools.append(e)
            elif e.name == "stream":
                timings.setdefault("first_token_ms", _ms(e.start - self.started))
        if tools and "tools_ms" not in timings:
            timings["tools_ms"] = _ms(max(e.end for e in tools) - min(e.start for e in tools))
        return timings


class _Ended(NamedTuple):
    """What the summary needs of an ended span."""

    name: str
    span_id: int
    parent_id: int | None
    start: float
    end: float
    ttft_ms: float | None
