"""`GET /v1/admin/safety-decisions`: the safety stages' decisions on the caller's org's runs, for its administrators.

Answered from the safety ledger (`safety_decisions`, filled by the projector about half a second behind the
runs), newest first, within `since`/`until` (ISO 8601 instants with an offset; the last 24 hours by default),
optionally one `stage` and one `action`, at most `limit` (1-1000, default 100). Only the org's own decisions,
and only for a token with role admin (403 otherwise).
"""

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.access import authenticate, context_of, int_query, require_admin
from api.presenters import iso
from events.safety import SAFETY_ACTIONS, SAFETY_STAGES
from kernel.envelope import utc_now
from kernel.errors import InvalidRequest
from projections.safety_decisions import SafetyDecisionRow, SafetyLedger

DEFAULT_WINDOW = timedelta(hours=24)
# The instants a DateTime64 column holds (the ledger's decided_at), with a day's margin for the default window.
EARLIEST = datetime(1900, 1, 2, tzinfo=UTC)
LATEST = datetime(2299, 12, 30, tzinfo=UTC)
MAX_LIMIT = 1000


async def list_safety_decisions(request: Request) -> JSONResponse:
    principal = authenticate(request)
    require_admin(principal, "your org's safety decisions")
    now = utc_now()
    until = _instant(request, "until") or now + timedelta(seconds=1)
    since = _instant(request, "since") or until - DEFAULT_WINDOW
    if since >= until:
        raise InvalidRequest(detail=f"query parameter since must be before until, got {iso(since)} and {iso(until)}")
    stage = _choice(request, "stage", SAFETY_STAGES)
    action = _choice(request, "action", SAFETY_ACTIONS)
    limit = int_query(request, "limit", default=100, minimum=1, maximum=MAX_LIMIT)
    rows = await SafetyLedger(context_of(request).read_models.store).decisions(
        principal.org_id, since=since, until=until, stage=stage, action=action, limit=limit
    )
    return JSONResponse({
        "orgId": principal.org_id, "since": iso(since), "until": iso(until),
        "decisions": [decision_json(row) for row in rows],
    })


def decision_json(row: SafetyDecisionRow) -> dict:
    return {
        "eventId": row.event_id,
        "runId": row.run_id,
        "conversationId": row.conversation_id,
        "turnSeq": row.turn_seq,
        "workspaceId": row.workspace_id,
        "userId": row.user_id,
        "stage": row.stage,
        "action": row.action,
        "subject": row.subject or None,
        "categories": [
            {"category": name, "score": round(score, 6)} for name, score in zip(row.category_names, row.category_scores)
        ],
        "triggered": row.triggered,
        "classifiers": row.classifiers,
        "signals": row.signals,
        "failures": row.failures,
        "failMode": row.fail_mode or None,
        "policyId": row.policy_id,
        "policyVersion": row.policy_version,
        "reason": row.reason,
        "decidedAt": iso(row.decided_at),
    }


def _instant(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidRequest(
            detail=f"query parameter {name} must be an ISO 8601 instant with an offset, e.g. 2026-12-04T00:00:00Z, got {raw!r}"
        )
    moment = moment.astimezone(UTC)
    if not EARLIEST <= moment <= LATEST:  # ClickHouse's DateTime64 cannot hold it (it was a 500: schemathesis)
        raise InvalidRequest(detail=f"query parameter {name} must be between {EARLIEST.year} and {LATEST.year}, got {raw!r}")
    return moment


def _choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    if raw not in choices:
        raise InvalidRequest(detail=f"query parameter {name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw
