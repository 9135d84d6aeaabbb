"""The log context: what a log line is about, bound per request or per envelope, and inherited by tasks."""

import asyncio
from dataclasses import dataclass

import pytest

from kernel import log_context
from kernel.envelope import Actor, Envelope

TRACE_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass(frozen=True, kw_only=True)
class Something:
    run_id: str
    conversation_id: str


def envelope(*, org_id: str = "org_1", run_id: str = "run_1", conversation_id: str = "conv_1", trace_parent=None) -> Envelope:
    wrapped = Envelope.wrap(
        Something(run_id=run_id, conversation_id=conversation_id), key=run_id,
        actor=Actor(user_id="u", org_id=org_id, workspace_id="ws"),
    )
    return Envelope(**{**vars(wrapped), "trace_parent": trace_parent})


def test_bound_fields_are_added_and_restored() -> None:
    assert log_context.current() == {}
    with log_context.bound(request_id="req_1", org_id=None):  # a field without a value is left out
        assert log_context.current() == {"request_id": "req_1"}
        token = log_context.bind(org_id="org_1")
        assert log_context.current() == {"request_id": "req_1", "org_id": "org_1"}
        log_context.reset(token)
        assert log_context.current() == {"request_id": "req_1"}
    assert log_context.current() == {}


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log fields"):
        log_context.bind(user_email="someone@example.com")


async def test_a_task_keeps_what_was_bound_when_it_started_and_its_own_binds_stay_inside_it() -> None:
    seen = {}

    async def work() -> None:
        seen["inherited"] = dict(log_context.current())
        log_context.bind(run_id="run_2")
        seen["own"] = dict(log_context.current())

    with log_context.bound(request_id="req_1"):
        await asyncio.create_task(work())
        assert log_context.current() == {"request_id": "req_1"}
    assert seen == {"inherited": {"request_id": "req_1"}, "own": {"request_id": "req_1", "run_id": "run_2"}}


@pytest.mark.parametrize(
    ("trace_parent", "trace_id"),
    [
        (TRACE_PARENT, "4bf92f3577b34da6a3ce929d0e0e4736"),
        (TRACE_PARENT.upper(), "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # all zeros: invalid
        ("not a trace parent", None),
        ("", None),
        (None, None),
    ],
)
def test_the_trace_id_comes_from_a_valid_w3c_traceparent_only(trace_parent, trace_id) -> None:
    assert log_context.trace_id_of(trace_parent) == trace_id


def test_an_envelope_names_its_org_conversation_run_and_trace() -> None:
    assert log_context.envelope_fields(envelope(trace_parent=TRACE_PARENT)) == {
        "org_id": "org_1", "conversation_id": "conv_1", "run_id": "run_1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    assert log_context.envelope_fields(envelope()) == {"org_id": "org_1", "conversation_id": "conv_1", "run_id": "run_1"}


def test_a_batch_binds_only_what_its_envelopes_share() -> None:
    one_run = [envelope(), envelope()]
    assert log_context.common_fields(one_run) == {"org_id": "org_1", "conversation_id": "conv_1", "run_id": "run_1"}
    two_runs_one_org = [envelope(run_id="run_1"), envelope(run_id="run_2", conversation_id="conv_2")]
    assert log_context.common_fields(two_runs_one_org) == {"org_id": "org_1"}
    assert log_context.common_fields([envelope(org_id="a"), envelope(org_id="b", run_id="x", conversation_id="y")]) == {}
    assert log_context.common_fields([]) == {}
    with log_context.bound_to(one_run):
        assert log_context.current()["run_id"] == "run_1"
    assert log_context.current() == {}
