"""`GET /v1/admin/analytics[/{name}]`: the analysts' documented queries, run for the caller's org only.

Org administrators get the answers of docs/analytics.md without access to the store: each query is ours
(projections/analyst_queries.py), run with every table fixed to the caller's org. There is no free SQL here
(docs/analytics.md says why). Rows are JSON objects in the query's column order; times are ISO 8601 UTC.
"""

from datetime import date, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.access import authenticate, context_of, require_admin
from api.presenters import iso
from kernel.errors import NotFound
from projections.analyst_queries import ANALYST_QUERIES, UnknownQuery, run_for_org


async def list_analytics(request: Request) -> JSONResponse:
    principal = authenticate(request)
    require_admin(principal, "your org's analytics")
    return JSONResponse({
        "queries": [{"name": query.name, "question": query.question} for query in ANALYST_QUERIES.values()],
    })


async def run_analytics(request: Request) -> JSONResponse:
    principal = authenticate(request)
    require_admin(principal, "your org's analytics")
    name = request.path_params["name"]
    try:
        rows = await run_for_org(context_of(request).read_models.store, name, principal.org_id)
    except UnknownQuery:
        raise NotFound(detail=f"no analytics query is named {name!r}: GET /v1/admin/analytics lists them") from None
    query = ANALYST_QUERIES[name]
    return JSONResponse({
        "name": query.name, "question": query.question, "orgId": principal.org_id,
        "rows": [{column: _json_value(value) for column, value in row.items()} for row in rows],
    })


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return value
