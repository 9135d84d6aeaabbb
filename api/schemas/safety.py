"""The safety stages' decisions on an org's runs, as its administrators review them (docs/safety.md)."""

from __future__ import annotations

from api.schemas.base import Instant, ResponseModel


class CategoryScore(ResponseModel):
    category: str
    score: float


class SafetyDecisionItem(ResponseModel):
    event_id: str
    run_id: str
    conversation_id: str
    turn_seq: int
    workspace_id: str
    user_id: str
    stage: str
    action: str
    subject: str | None
    categories: list[CategoryScore]
    triggered: list[str]
    classifiers: list[str]
    signals: list[str]
    failures: list[str]
    fail_mode: str | None
    policy_id: str
    policy_version: str
    reason: str
    decided_at: Instant


class SafetyDecisionPage(ResponseModel):
    """`GET /v1/admin/safety-decisions`, newest first."""

    org_id: str
    since: Instant
    until: Instant
    decisions: list[SafetyDecisionItem]
