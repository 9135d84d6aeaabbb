"""The tool port's pure parts: who may use a tool, a result's invariants, cutting long results."""

from __future__ import annotations

import pytest

from kernel.envelope import Actor
from processors.tools.catalog import DeclarationError, ToolPolicy, ToolResult, allowed, clip

ALICE = Actor(user_id="user_alice", org_id="org_a", workspace_id="ws_a1")
ANNA = Actor(user_id="user_anna", org_id="org_a", workspace_id="ws_a2")
CAROL = Actor(user_id="user_carol", org_id="org_b", workspace_id="ws_b1")


@pytest.mark.parametrize(
    ("orgs", "workspaces", "admitted"),
    [
        ((), (), {ALICE, ANNA, CAROL}),
        (("org_a",), (), {ALICE, ANNA}),
        (("org_a", "org_b"), (), {ALICE, ANNA, CAROL}),
        ((), ("ws_a2", "ws_b1"), {ANNA, CAROL}),
        (("org_a",), ("ws_a2", "ws_b1"), {ANNA}),  # both must admit the caller
        (("org_c",), (), set()),
    ],
)
def test_allowed_admits_a_caller_only_when_both_its_org_and_its_workspace_are_admitted(
    orgs: tuple[str, ...], workspaces: tuple[str, ...], admitted: set[Actor]
) -> None:
    tool = ToolPolicy(server="s", name="t", orgs=orgs, workspaces=workspaces)

    assert {actor for actor in (ALICE, ANNA, CAROL) if allowed(tool, actor)} == admitted


def test_a_policy_has_safe_defaults() -> None:
    tool = ToolPolicy(server="s", name="t")

    assert (tool.timeout_s, tool.idempotent, tool.require_approval, tool.long, tool.max_result_tokens) == (
        30.0, False, False, False, None,
    )


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"name": "a.b"}, "name", "a tool name is 1-64 of"),
        ({"name": "x" * 65}, "name", "a tool name is 1-64 of"),
        ({"server": "Bad"}, "server", "is not a server name"),
        ({"timeout_s": float("inf")}, "timeout_s", "finite number > 0"),
        ({"timeout_s": 0.0}, "timeout_s", "finite number > 0"),
        ({"orgs": ("",)}, "orgs", "must not be empty"),
        ({"max_result_tokens": 0}, "max_result_tokens", ">= 1"),
    ],
)
def test_a_policy_refuses_what_cannot_work(fields: dict, field: str, problem: str) -> None:
    with pytest.raises(DeclarationError) as caught:
        ToolPolicy(**({"server": "s", "name": "t"} | fields))

    assert caught.value.field == field and problem in caught.value.problem


def test_results_say_whether_they_are_errors_and_a_timeout_says_timed_out() -> None:
    assert ToolResult.completed("5", duration_ms=3) == ToolResult(status="completed", content="5", is_error=False, duration_ms=3)
    assert ToolResult.failed("boom", duration_ms=1).is_error
    timed_out = ToolResult.timed_out(2.5, duration_ms=2500)
    assert (timed_out.status, timed_out.content, timed_out.is_error) == ("timed_out", "timed out after 2.5 s", True)
    assert ToolResult.unavailable("down", duration_ms=0).status == "unavailable"
    with pytest.raises(ValueError, match="is_error must be True"):
        ToolResult(status="failed", content="", is_error=False, duration_ms=0)
    with pytest.raises(ValueError, match="unknown tool status"):
        ToolResult(status="done", content="", is_error=False, duration_ms=0)  # type: ignore[arg-type]


def test_clip_cuts_a_long_result_and_says_so() -> None:
    assert clip("short", 10) == "short"
    assert clip("x" * 1000, None) == "x" * 1000
    clipped = clip("x" * 1000, 10)
    assert clipped.startswith("x" * 40 + "\n") and "x" * 41 not in clipped
    assert clipped.endswith("[truncated: the result was longer than 10 tokens]")
