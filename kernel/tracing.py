"""Traces across the log: the W3C trace context each envelope carries, continued by whatever reacts to it.

An envelope's `trace_parent` is a W3C `traceparent` value. `Envelope.wrap` fills it here, in one place: an envelope
made from a `cause` carries the context of the span reacting to that cause (the span in hand when it is in the
cause's trace, else the span of the processor's reaction to it), one made without a cause carries the context of
the span in hand (an API request's). So one turn is one trace across processes: the request, the command, each
processor's reaction, the worker's queue wait and generation, the tool calls, the safety checks, the projection.

Spans are made through OpenTelemetry's API, which records nothing until an SDK tracer provider is installed (the
composition root installs one only when the `OTEL_*` variables ask for export: `turnlog/telemetry.py`). Without
one, reactions make no spans at all and `span()` hands out an invalid span at once; the trace id still travels
(a caused envelope copies its cause's `traceparent`, and the API starts every request's from the caller's or a
new one), so the log lines of one turn name the same trace either way.

A processor's reaction to a batch (`reaction`) has one span per trace among the batch's envelopes, started the
first time something needs it (an envelope it causes, a span inside it, `reacting_to`) and timed from the batch's
start: a batch a processor reads and lets pass (deltas, to most of them) records nothing.
"""

from __future__ import annotations

import functools
import random
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import datetime
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    INVALID_SPAN, NonRecordingSpan, NoOpTracerProvider, ProxyTracerProvider, Span, SpanContext, SpanKind, Status,
    StatusCode, TraceFlags,
)

if TYPE_CHECKING:
    from kernel.envelope import Envelope

TRACER_NAME = "turnlog"
TRACEPARENT_HEADER = "traceparent"

Attributes = Mapping[str, str | bool | int | float | tuple[str, ...]]

# version-traceid-parentid-flags, lower-case hex; a later version may append fields after another "-".
_TRACE_PARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


@functools.lru_cache(maxsize=4096)  # a run's events all name the few envelopes that caused them
def parse(trace_parent: str | None) -> SpanContext | None:
    """The span context a W3C `traceparent` value names, or None when there is none or it is malformed."""
    if not trace_parent:
        return None
    match = _TRACE_PARENT.match(trace_parent.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return SpanContext(
        trace_id=int(trace_id, 16), span_id=int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16) & 1)
    )


def format_trace_parent(context: SpanContext) -> str:
    """`context` as a W3C `traceparent` value (version 00)."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def trace_id_hex(context: SpanContext) -> str:
    return f"{context.trace_id:032x}"


def enabled() -> bool:
    """Whether spans are recorded in this process: an SDK tracer provider is installed."""
    return not isinstance(trace.get_tracer_provider(), (ProxyTracerProvider, NoOpTracerProvider))


def _tracer() -> trace.Tracer:
    return _tracer_of(trace.get_tracer_provider())


@functools.lru_cache(maxsize=4)
def _tracer_of(provider: trace.TracerProvider) -> trace.Tracer:
    return provider.get_tracer(TRACER_NAME)


def current() -> str | None:
    """The `traceparent` of the span in hand (a request's, a generation's, ...), None when there is none."""
    context = trace.get_current_span().get_span_context()
    return format_trace_parent(context) if context.is_valid else None


def caused_by(cause: Envelope) -> str | None:
    """The `traceparent` of an envelope `cause` led to: the span reacting to `cause` where there is one (the span in
    hand when it is in `cause`'s trace, else the reaction's span for that trace), else `cause`'s own."""
    cause_context = parse(cause.trace_parent)
    if cause_context is None:
        return None
    in_hand = trace.get_current_span().get_span_context()
    if in_hand.is_valid and in_hand.trace_id == cause_context.trace_id:
        return format_trace_parent(in_hand)
    reaction = _REACTION.get()
    if reaction is not None:
        reacting = reaction.span_for(cause_context.trace_id)
        if reacting is not None:
            return format_trace_parent(reacting.get_span_context())
    return cause.trace_parent


def new_span_context() -> SpanContext:
    """A fresh trace's context, not sampled (nothing records it): what a request without a usable `traceparent`
    carries on its envelopes when this process records no spans."""
    return SpanContext(
        trace_id=random.getrandbits(128) or 1, span_id=random.getrandbits(64) or 1, is_remote=False,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
    )


@contextmanager
def continued(
    trace_parent: str | None, name: str, *, kind: SpanKind = SpanKind.SERVER, attributes: Attributes | None = None
) -> Iterator[Span]:
    """A span continuing a caller's trace (`trace_parent`, a `traceparent` header: a new trace when it is missing or
    malformed), current while the block runs and ended after it. With no spans recorded, a non-recording span with
    the caller's context (or a new one), so what the block appends still carries a trace."""
    incoming = parse(trace_parent)
    if enabled():
        # An empty context, not the current one: a request starts its own trace whatever ran before it.
        parent = trace.set_span_in_context(NonRecordingSpan(incoming)) if incoming is not None else otel_context.Context()
        span = _tracer().start_span(name, context=parent, kind=kind, attributes=attributes)
    else:
        span = NonRecordingSpan(incoming or new_span_context())
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except Exception as error:
        failed(span, error)
        raise
    finally:
        otel_context.detach(token)
        span.end()


@contextmanager
def span(
    name: str,
    *,
    cause: Envelope | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes | None = None,
    start_time: datetime | None = None,
) -> Iterator[Span]:
    """A span for the block, current while it runs: a child of the span reacting to `cause` (see `caused_by`), or,
    without a cause, of the span in hand (or of the reaction's, when its batch holds one trace). An invalid span,
    at no cost, when this process records none."""
    if not enabled():
        yield INVALID_SPAN
        return
    with _tracer().start_as_current_span(
        name, context=_parent_of(cause), kind=kind, attributes=attributes, start_time=_nanoseconds(start_time),
    ) as opened:
        yield opened


def record(
    name: str, *, cause: Envelope, start: datetime, end: datetime | None = None, attributes: Attributes | None = None
) -> None:
    """A span that is already over (a queue wait, from the envelope's time to its claim), as a child of `cause`'s."""
    if not enabled():
        return
    opened = _tracer().start_span(name, context=_parent_of(cause), attributes=attributes, start_time=_nanoseconds(start))
    opened.end(end_time=_nanoseconds(end) or time.time_ns())


def failed(span: Span, error: BaseException | str) -> None:
    """Mark `span` as failed (an exception recorded with it, or a reason)."""
    if not span.is_recording():
        return
    if isinstance(error, BaseException):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    else:
        span.set_status(Status(StatusCode.ERROR, error))


def _parent_of(cause: Envelope | None) -> otel_context.Context | None:
    """The context a new span's parent comes from (None: the current one)."""
    in_hand = trace.get_current_span().get_span_context()
    reaction = _REACTION.get()
    if cause is None:
        if in_hand.is_valid or reaction is None:
            return None
        reacting = reaction.only_span()
        return trace.set_span_in_context(reacting) if reacting is not None else None
    cause_context = parse(cause.trace_parent)
    if cause_context is None:
        return None
    if in_hand.is_valid and in_hand.trace_id == cause_context.trace_id:
        return None
    reacting = reaction.span_for(cause_context.trace_id) if reaction is not None else None
    return trace.set_span_in_context(reacting if reacting is not None else NonRecordingSpan(cause_context))


def _nanoseconds(moment: datetime | None) -> int | None:
    return round(moment.timestamp() * 1e9) if moment is not None else None


# --- a processor's reaction to a batch ----------------------------------------------------------------------------


class _Reaction:
    """The spans of one batch's reaction: one per trace among its envelopes, each started when first needed."""

    __slots__ = ("_name", "_attributes", "_started_ns", "_parents", "_spans", "_closed")

    def __init__(self, name: str, envelopes: Iterable[Envelope], attributes: Attributes | None) -> None:
        self._name = name
        self._attributes = attributes
        self._started_ns = time.time_ns()
        # Per trace, the first of the batch's envelopes in it: the reaction's span is its child.
        self._parents: dict[int, SpanContext] = {}
        for envelope in envelopes:
            context = parse(envelope.trace_parent)
            if context is not None and context.trace_id not in self._parents:
                self._parents[context.trace_id] = context
        self._spans: dict[int, Span] = {}
        self._closed = False

    def span_for(self, trace_id: int) -> Span | None:
        """The reaction's span in trace `trace_id`, started now if it was not (None: no envelope of the batch is in
        it, or the reaction is over: a task it started that outlives it)."""
        if self._closed:
            return None
        reacting = self._spans.get(trace_id)
        if reacting is not None:
            return reacting
        parent = self._parents.get(trace_id)
        if parent is None:
            return None
        reacting = _tracer().start_span(
            self._name, context=trace.set_span_in_context(NonRecordingSpan(parent)), kind=SpanKind.CONSUMER,
            attributes=self._attributes, start_time=self._started_ns,
        )
        self._spans[trace_id] = reacting
        return reacting

    def only_span(self) -> Span | None:
        """The reaction's span when its batch holds exactly one trace."""
        if len(self._parents) != 1:
            return None
        [trace_id] = self._parents
        return self.span_for(trace_id)

    def every_span(self) -> None:
        for trace_id in self._parents:
            self.span_for(trace_id)

    def close(self, error: BaseException | None) -> None:
        self._closed = True
        for reacting in self._spans.values():
            if error is not None and isinstance(error, Exception):
                failed(reacting, error)
            reacting.end()


_REACTION: ContextVar[_Reaction | None] = ContextVar("turnlog_reaction", default=None)


class reaction:
    """The block reacts to `envelopes` as `name` (a processor's group): spans in their traces, as the module says.

    `every_trace`: a span for each trace of the batch even where the reaction causes nothing on the log (the
    projector, whose effects are rows). A plain class: it wraps every processor batch, and does nothing (no span, no
    context change) when this process records no spans.
    """

    __slots__ = ("_reaction", "_token")

    def __init__(
        self, name: str, envelopes: Iterable[Envelope], *, attributes: Attributes | None = None, every_trace: bool = False
    ) -> None:
        self._reaction = _Reaction(name, envelopes, attributes) if enabled() else None
        self._token: Token | None = None
        if self._reaction is not None and every_trace:
            self._reaction.every_span()

    def __enter__(self) -> None:
        if self._reaction is not None:
            self._token = _REACTION.set(self._reaction)

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        if self._reaction is not None:
            assert self._token is not None
            _REACTION.reset(self._token)
            self._reaction.close(error)


@contextmanager
def reacting_to(envelope: Envelope) -> Iterator[None]:
    """Make the reaction's span for `envelope`'s trace the span in hand while the block runs (for a processor that
    handles a batch envelope by envelope, so what one envelope's handling starts is a child of the right span)."""
    reaction_now = _REACTION.get()
    context = parse(envelope.trace_parent) if reaction_now is not None else None
    reacting = reaction_now.span_for(context.trace_id) if reaction_now is not None and context is not None else None
    if reacting is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(reacting))
    try:
        yield
    finally:
        otel_context.detach(token)
