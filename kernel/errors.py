"""The turnlog error hierarchy: one root, typed leaves that carry the data a client needs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "Conflict",
    "FieldError",
    "Forbidden",
    "Gone",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "Suspended",
    "TurnlogError",
    "Unauthenticated",
    "Unavailable",
    "UnprocessableContent",
    "UnsupportedMediaType",
]


@dataclass(frozen=True, kw_only=True)
class FieldError:
    """One rejected input field; `field` is a JSON path such as `input[0].text`."""

    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class TurnlogError(Exception):
    """Root of every error turnlog raises on purpose.

    `detail` is written for the client (it ends up in the problem+json body), so it must
    never contain secrets or another tenant's data. `extra` holds additional JSON members
    for the problem body (for example the id of the run that conflicts).
    """

    # Exceptions are not frozen dataclasses: Python itself assigns __traceback__,
    # __context__ and __notes__ on raised exceptions, which a frozen instance would refuse.
    def __init__(self, *, detail: str, extra: Mapping[str, object] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: Mapping[str, object] = MappingProxyType(dict(extra or {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(detail={self.detail!r})"


class Unauthenticated(TurnlogError):
    """No usable credentials: missing, malformed, forged or expired token."""


class Forbidden(TurnlogError):
    """Authenticated, but the principal may not act on this resource."""


class Suspended(Forbidden):
    """The user is suspended (abuse, or an operator's decision); `headers` carry `Retry-After` until it ends."""

    def __init__(self, *, detail: str, headers: Mapping[str, str] | None = None, extra: Mapping[str, object] | None = None) -> None:
        super().__init__(detail=detail, extra=extra)
        self.headers: Mapping[str, str] = MappingProxyType(dict(headers or {}))


class NotFound(TurnlogError):
    """The resource does not exist, or belongs to another tenant (never tell which)."""


class Gone(TurnlogError):
    """It existed, and is no longer kept: a run's stream past the retention period of its deltas."""


class Conflict(TurnlogError):
    """The request contradicts current state: an active run exists, a run already finished."""


class IdempotencyKeyReused(TurnlogError):
    """An idempotency key came back with a different request body."""

    def __init__(
        self,
        *,
        detail: str,
        idempotency_key: str,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(detail=detail, extra=extra)
        self.idempotency_key = idempotency_key


class InvalidRequest(TurnlogError):
    """The request is syntactically or semantically invalid; `errors` lists the fields."""

    def __init__(
        self,
        *,
        detail: str,
        errors: Iterable[FieldError] = (),
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(detail=detail, extra=extra)
        self.errors: tuple[FieldError, ...] = tuple(errors)


class UnprocessableContent(InvalidRequest):
    """Well-formed, but it names something that cannot be used (an attachment the caller cannot see)."""


class PayloadTooLarge(TurnlogError):
    """The request body exceeds the accepted size."""

    def __init__(
        self,
        *,
        detail: str,
        max_bytes: int,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(detail=detail, extra=extra)
        self.max_bytes = max_bytes


class QuotaExceeded(TurnlogError):
    """A limit was reached: credits, a monthly budget, a rate or runs in progress; `headers` are its rate-limit fields."""

    def __init__(self, *, detail: str, headers: Mapping[str, str] | None = None, extra: Mapping[str, object] | None = None) -> None:
        super().__init__(detail=detail, extra=extra)
        self.headers: Mapping[str, str] = MappingProxyType(dict(headers or {}))


class UnsupportedMediaType(TurnlogError):
    """The request body is not in a media type the endpoint accepts."""


class Unavailable(TurnlogError):
    """A dependency is down or overloaded; the client may retry after `retry_after_s`."""

    def __init__(
        self,
        *,
        detail: str,
        retry_after_s: int | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        if retry_after_s is not None and retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {retry_after_s}")
        super().__init__(detail=detail, extra=extra)
        self.retry_after_s = retry_after_s
