"""The API's metrics: request durations by route template and status, open event streams, quota refusals.

Labels follow the OpenTelemetry HTTP conventions: `http_request_method`, `http_route` (the route's template, such as
`/v1/runs/{run_id}/stream`, never the path a client sent: ids would make every path a series of its own),
`http_response_status_code`; `kind` is a refusal's reason (insufficient_credits, token_budget_exhausted, rate,
concurrent_runs, suspended, ...).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from kernel.metrics import LATENCY_BUCKETS_S

HTTP_REQUEST_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Time from a request's arrival to the end of its answer (for an event stream: until it closed).",
    ["http_request_method", "http_route", "http_response_status_code"],
    buckets=LATENCY_BUCKETS_S,
)
SSE_STREAMS_OPEN = Gauge(
    "turnlog_sse_streams_open", "Server-sent event streams open now, by route.", ["http_route"]
)
QUOTA_REFUSALS = Counter(
    "turnlog_quota_refusals_total",
    "Turns and regenerations that governance refused before they ran (429 or 403), by reason.",
    ["kind"],
)

# What a request that matched no route is counted as (so scanners' random paths do not each make a series).
UNMATCHED_ROUTE = "unmatched"
