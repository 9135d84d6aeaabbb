"""What a log line is about: the request id, org, conversation, run and trace id of the work in hand, as context variables.

The API binds the request id (and, once the caller is known, its org and the ids in the path); the processor
runtime, the inference worker and the tool runner bind the ids of the envelope they react to. Every log record
written meanwhile carries them (`turnlog/logs.py` adds them to each line). Context variables follow asyncio tasks:
a task started while they are bound keeps them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token

from kernel.envelope import Envelope

FIELDS = ("request_id", "org_id", "conversation_id", "run_id", "trace_id")

_FIELDS: ContextVar[Mapping[str, str]] = ContextVar("turnlog_log_fields", default={})

# W3C trace context: version-traceid-parentid-flags; an all-zero trace id is invalid.
_TRACE_PARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def current() -> Mapping[str, str]:
    """The fields bound now (only those with a value)."""
    return _FIELDS.get()


def bind(**fields: str | None) -> Token:
    """Add `fields` (those with a value) to the current context; `reset(token)` restores what was bound before."""
    given = {name: value for name, value in fields.items() if value}
    unknown = set(given) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log fields {sorted(unknown)}; fields are {', '.join(FIELDS)}")
    return _FIELDS.set({**_FIELDS.get(), **given})


def reset(token: Token) -> None:
    _FIELDS.reset(token)


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        _FIELDS.reset(token)


def trace_id_of(trace_parent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` value, or None when there is none or it is malformed."""
    if not trace_parent:
        return None
    match = _TRACE_PARENT.match(trace_parent.strip().lower())
    if match is None or match[1] == "0" * 32:
        return None
    return match[1]


def envelope_fields(envelope: Envelope) -> dict[str, str]:
    """What an envelope says about the work: its org, the conversation and run its payload names, its trace id."""
    # On every processor batch: plain attribute reads, no intermediate structures.
    fields: dict[str, str] = {}
    if envelope.actor.org_id:
        fields["org_id"] = envelope.actor.org_id
    payload = envelope.payload
    conversation_id = getattr(payload, "conversation_id", None)
    if conversation_id and isinstance(conversation_id, str):
        fields["conversation_id"] = conversation_id
    run_id = getattr(payload, "run_id", None)
    if run_id and isinstance(run_id, str):
        fields["run_id"] = run_id
    if envelope.trace_parent:
        trace_id = trace_id_of(envelope.trace_parent)
        if trace_id:
            fields["trace_id"] = trace_id
    return fields


def common_fields(envelopes: Iterable[Envelope]) -> dict[str, str]:
    """The fields every envelope shares (a batch of one run's events has its run; a mixed batch only what is common)."""
    shared: dict[str, str] | None = None
    for envelope in envelopes:
        fields = envelope_fields(envelope)
        shared = fields if shared is None else {name: value for name, value in shared.items() if fields.get(name) == value}
        if not shared:
            return {}
    return shared or {}


class bound_to:
    """Bind what `envelopes` have in common while the block runs (a plain class: it wraps every processor batch)."""

    __slots__ = ("_fields", "_token")

    def __init__(self, envelopes: Iterable[Envelope]) -> None:
        self._fields = common_fields(envelopes)
        self._token: Token | None = None

    def __enter__(self) -> None:
        if self._fields:
            self._token = _FIELDS.set({**_FIELDS.get(), **self._fields})

    def __exit__(self, *_: object) -> None:
        if self._token is not None:
            _FIELDS.reset(self._token)
