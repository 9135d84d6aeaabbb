"""The analysts' documented queries as an org administrator runs them through the API (docs/analytics.md)."""

from __future__ import annotations

from typing import Any

from api.schemas.base import ResponseModel


class AnalyticsQueryItem(ResponseModel):
    name: str
    question: str


class AnalyticsQueryList(ResponseModel):
    """`GET /v1/admin/analytics`, in the order of docs/analytics.md."""

    queries: list[AnalyticsQueryItem]


class AnalyticsAnswer(ResponseModel):
    """`GET /v1/admin/analytics/{name}`: the query's rows over the caller's org's data only."""

    name: str
    question: str
    org_id: str
    rows: list[dict[str, Any]]
