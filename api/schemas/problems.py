"""RFC 9457 problem details: the shape of every error of turnlog's own API (api/problems.py renders them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FieldProblem(BaseModel):
    """One field of a request that is wrong, and why."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="its path, e.g. `input[0].text`; empty for the body as a whole")
    message: str


class Problem(BaseModel):
    """`application/problem+json`. Extension members carry a leaf's data: `errors` (400), `maxBytes` (413, 414,
    431), `maxHeaders` (431), `maxConnections` (429), `retryAfter` (503, 429), `idempotencyKey` (422), and
    governance's `reason`, `violated-policies`, `balance`, `available`, `refillsAt`, `suspendedUntil` (429, 403)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="a URI naming the kind of problem, `https://turnlog.dev/problems/<slug>`, or `about:blank`")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="what went wrong, for a person")
    instance: str | None = Field(default=None, description="the request's path")
    errors: list[FieldProblem] | None = None
