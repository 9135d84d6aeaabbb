"""The analysts' questions, one ClickHouse query each: run by `turnlog sql`, by the admin API for one org, in CI.

docs/analytics.md shows each query under its question (a test keeps the page and this module the same). An
operator runs them on the whole store; an org administrator runs them through the server
(`GET /v1/admin/analytics/{name}`), where `scoped_to_org` fixes every table to the caller's org with
ClickHouse's `additional_table_filters`. That filter is sound here because the SQL is ours: it is applied
when a table is read, after the query's own expressions could have seen other rows, so a free query could
learn about them from an error (docs/analytics.md, "No SQL over HTTP"); these queries raise no such errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from projections.store import SqlStore

__all__ = ["AnalystQuery", "ANALYST_QUERIES", "UnknownQuery", "run_for_org", "scoped_to_org"]


@dataclass(frozen=True, slots=True)
class AnalystQuery:
    name: str  # in URLs and on the command line
    question: str  # the heading it answers in docs/analytics.md
    sql: str


class UnknownQuery(LookupError):
    """No analyst query has this name."""


ANALYST_QUERIES: dict[str, AnalystQuery] = {
    query.name: query
    for query in (
        AnalystQuery(
            name="turns-per-day",
            question="Turns and active users per day",
            sql="""\
SELECT
    toDate(created_at) AS day,
    org_id,
    count() AS turns,
    uniqExact(owner_id) AS active_users,
    uniqExact(conversation_id) AS conversations
FROM turns FINAL
WHERE role = 'user' AND created_at >= today() - 30
GROUP BY day, org_id
ORDER BY day, org_id
""",
        ),
        AnalystQuery(
            name="latency-per-pool",
            question="Time to first token and run duration per pool and model",
            sql="""\
SELECT
    pool,
    model,
    engine,
    count() AS runs,
    countIf(ttft_ms IS NOT NULL) AS runs_with_tokens,
    round(quantile(0.5)(queue_ms), 1) AS queue_p50_ms,
    round(quantile(0.5)(ttft_ms), 1) AS ttft_p50_ms,
    round(quantile(0.95)(ttft_ms), 1) AS ttft_p95_ms,
    round(quantile(0.5)(duration_ms), 1) AS duration_p50_ms,
    round(quantile(0.95)(duration_ms), 1) AS duration_p95_ms
FROM run_latency
WHERE started_at >= now() - INTERVAL 1 DAY AND pool != ''
GROUP BY pool, model, engine
ORDER BY pool, model, engine
""",
        ),
        AnalystQuery(
            name="routing",
            question="Routing decisions and fallbacks",
            sql="""\
SELECT
    pool,
    fallback_from,
    size_class,
    uniqExact(run_id) AS runs,
    uniqExact(org_id) AS orgs,
    round(avg(prompt_tokens), 1) AS avg_prompt_tokens,
    any(route_reason) AS example_reason
FROM prompt_manifests FINAL
WHERE assembled_at >= now() - INTERVAL 1 DAY
GROUP BY pool, fallback_from, size_class
ORDER BY runs DESC, pool, fallback_from
""",
        ),
        AnalystQuery(
            name="usage-and-cost",
            question="Token usage and cost per org",
            sql="""\
SELECT
    org_id,
    u.runs AS runs,
    u.prompt_tokens AS prompt_tokens,
    u.cached_tokens AS cached_tokens,
    u.output_tokens AS output_tokens,
    c.charged_runs AS charged_runs,
    c.cost_units AS cost_units
FROM (
    SELECT org_id, count() AS runs, sum(prompt_tokens) AS prompt_tokens, sum(cached_tokens) AS cached_tokens,
        sum(output_tokens) AS output_tokens
    FROM usage_ledger FINAL
    WHERE recorded_at >= today() - 30
    GROUP BY org_id
) AS u
LEFT JOIN (
    SELECT org_id, count() AS charged_runs, sum(units) AS cost_units
    FROM run_charges FINAL
    WHERE charged_at >= today() - 30
    GROUP BY org_id
) AS c USING (org_id)
ORDER BY cost_units DESC, org_id
""",
        ),
        AnalystQuery(
            name="retrieval",
            question="Retrieval: runs that searched, sources per run, citations per answer",
            sql="""\
SELECT
    t.org_id AS org_id,
    count() AS answers,
    countIf(r.searched OR JSONLength(t.sources) > 0 OR t.run_id IN (SELECT run_id FROM tool_calls WHERE tool = 'file_search'))
        AS answers_that_searched,
    sum(JSONLength(t.sources)) AS sources,
    round(avgIf(JSONLength(t.sources), JSONLength(t.sources) > 0), 2) AS sources_per_grounded_answer,
    countIf(JSONLength(t.citations) > 0) AS answers_with_citations,
    round(avgIf(JSONLength(t.citations), JSONLength(t.sources) > 0), 2) AS citations_per_grounded_answer
FROM turns AS t FINAL
LEFT JOIN (SELECT org_id, run_id, searched FROM run_latency) AS r ON r.org_id = t.org_id AND r.run_id = t.run_id
WHERE t.role = 'assistant' AND t.state = 'completed' AND t.created_at >= today() - 30
GROUP BY org_id
ORDER BY org_id
""",
        ),
        AnalystQuery(
            name="tool-executions",
            question="Tool executions",
            sql="""\
SELECT
    org_id,
    tool,
    count() AS calls,
    countIf(status = 'completed') AS completed,
    arraySort(groupUniqArrayIf(status, status != 'completed')) AS other_outcomes,
    sum(attempts) AS attempts,
    quantile(0.5)(duration_ms) AS p50_duration_ms,
    max(duration_ms) AS max_duration_ms
FROM tool_calls
WHERE finished_at >= now() - INTERVAL 1 DAY
GROUP BY org_id, tool
ORDER BY org_id, tool
""",
        ),
        AnalystQuery(
            name="safety-actions",
            question="Safety actions",
            sql="""\
SELECT
    org_id,
    stage,
    action,
    category,
    sum(decisions) AS decisions
FROM safety_actions_by_day
WHERE day >= today() - 30
GROUP BY org_id, stage, action, category
ORDER BY org_id, stage, action, category
""",
        ),
        AnalystQuery(
            name="failures",
            question="Failures by reason",
            sql="""\
SELECT
    what,
    status,
    reason_kind,
    count() AS failures,
    any(reason) AS example_reason
FROM (
    SELECT 'run' AS what, toString(status) AS status, reason, splitByString(': ', reason)[1] AS reason_kind
    FROM runs FINAL
    WHERE status IN ('failed', 'cancelled') AND created_at >= today() - 30
    UNION ALL
    SELECT 'tool call' AS what, toString(status) AS status, '' AS reason, toString(status) AS reason_kind
    FROM tool_calls
    WHERE status != 'completed' AND finished_at >= today() - 30
    UNION ALL
    SELECT 'file' AS what, 'failed' AS status, failure_reason AS reason, splitByString(': ', failure_reason)[1] AS reason_kind
    FROM file_states FINAL
    WHERE state = 'failed'
)
GROUP BY what, status, reason_kind
ORDER BY failures DESC, what, status, reason_kind
""",
        ),
    )
}

_ORG_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # api/bodies.py's RESOURCE_ID_PATTERN: safe inside a quoted literal


def scoped_to_org(sql: str, org_id: str, tables: dict[str, bool]) -> str:
    """`sql` with a SETTINGS clause that lets every table show only `org_id`'s rows.

    `tables` maps each table of the store to whether it has an `org_id` column; one without shows no rows
    at all (closed by default: a table added later without a tenant column leaks nothing).
    """
    if not _ORG_ID.match(org_id):
        raise ValueError(f"not an org id: {org_id!r}")
    org_filter = f"org_id = \\'{org_id}\\'"  # a string inside the map's quoted string
    filters = ", ".join(
        f"'{table}': '{org_filter if has_org else '0'}'" for table, has_org in sorted(tables.items())
    )
    return f"{sql.rstrip()}\nSETTINGS additional_table_filters = {{{filters}}}"


async def run_for_org(store: SqlStore, name: str, org_id: str) -> list[dict[str, object]]:
    """The named query's rows, as if the store held only `org_id`'s data."""
    query = ANALYST_QUERIES.get(name)
    if query is None:
        raise UnknownQuery(name)
    rows = await store.query(
        "SELECT table, countIf(name = 'org_id') > 0 AS has_org FROM system.columns"
        " WHERE database = currentDatabase() AND table IN (SELECT name FROM system.tables"
        " WHERE database = currentDatabase() AND NOT is_temporary AND engine NOT IN ('View', 'MaterializedView'))"
        " GROUP BY table"
    )
    tables = {str(row["table"]): bool(row["has_org"]) for row in rows}
    return await store.query(scoped_to_org(query.sql, org_id, tables))
