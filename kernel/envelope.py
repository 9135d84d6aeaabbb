"""The envelope every message on the log travels in: identity, scope, causality, and the typed payload."""

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Generic, TypeVar

from ulid import ULID

from kernel import tracing


@dataclass(frozen=True, kw_only=True)
class Actor:
    """The tenant scope of a message: every read and write is checked against it."""

    user_id: str
    org_id: str
    workspace_id: str


Payload = TypeVar("Payload")


def new_id(prefix: str) -> str:
    """A time-ordered unique id such as `run_01K3KQ60YB2J9J8JAHKQX4W9P2`."""
    return f"{prefix}_{ULID()}"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Envelope(Generic[Payload]):
    event_id: str
    key: str
    occurred_at: datetime
    actor: Actor
    payload: Payload
    causation_id: str | None = None
    correlation_id: str | None = None
    trace_parent: str | None = None

    @property
    def type(self) -> str:
        return type(self.payload).__name__

    @classmethod
    def wrap(
        cls,
        payload: Payload,
        *,
        key: str,
        actor: Actor,
        cause: "Envelope | None" = None,
        occurred_at: datetime | None = None,
    ) -> "Envelope[Payload]":
        """A new envelope; with `cause`, it inherits the causal chain (correlation and trace).

        Its `trace_parent` is the span reacting to `cause` (or, without a cause, the span in hand, such as an API
        request's): `kernel/tracing.py`, the one place a trace is continued from envelope to envelope.
        """
        return cls(
            event_id=new_id("evt"),
            key=key,
            occurred_at=occurred_at or utc_now(),
            actor=actor,
            payload=payload,
            causation_id=cause.event_id if cause else None,
            correlation_id=(cause.correlation_id or cause.event_id) if cause else None,
            trace_parent=tracing.caused_by(cause) if cause is not None else tracing.current(),
        )

    def with_payload(self, payload: Payload) -> "Envelope[Payload]":
        return replace(self, payload=payload)
