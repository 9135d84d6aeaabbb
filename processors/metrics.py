"""The processors' metrics: tool executions, safety actions, and what governance charged.

Labels: `tool` (a tool's name from the tools file or a built-in), `outcome` (how the call ended: completed, failed,
timed_out, unavailable, ...), `stage` (input, context, tool, output), `action` (allow, flag, redact, fence, drop,
refuse, replace, stop), `category` (a category a policy names, `none` when nothing triggered), `pool`. Never a
tenant's or a run's id.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from kernel.metrics import GENERATION_BUCKETS_S

TOOL_DURATION = Histogram(
    "gen_ai_execute_tool_duration_seconds",
    "Time a tool runner spent on one requested call: its tries and the waits between them (0 when its breaker refused).",
    ["tool", "outcome"],
    buckets=GENERATION_BUCKETS_S,
)
SAFETY_ACTIONS = Counter(
    "turnlog_safety_actions_total",
    "Safety stage decisions, by stage, action and each category that triggered (category none: nothing did).",
    ["stage", "action", "category"],
)
CREDITS_CHARGED = Counter(
    "turnlog_governance_credits_charged_total",
    "Credits governance charged for finished runs (tiers file prices), by pool.",
    ["pool"],
)
