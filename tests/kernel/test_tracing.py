"""Traces across the log: a caused envelope continues its cause's trace, from the span that reacted to the cause.

With the SDK recording in memory (`trace_collector.recorded_spans`), and without it (OpenTelemetry's no-op API: no
spans, the trace id still travels from envelope to envelope).
"""

import asyncio
from collections.abc import Sequence

import pytest

import trace_collector
from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from events.embedded import EmbeddedLog
from events.runs import RunHeartbeat
from kernel import tracing
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.log import ConsumerCommit, OutgoingRecord
from kernel.runtime import Attempts, Delivery, Processor, encode, process_batch

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
ACTOR = Actor(user_id="u", org_id="o", workspace_id="w")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CAUSE_SPAN_ID = "00f067aa0ba902b7"
TRACE_PARENT = f"00-{TRACE_ID}-{CAUSE_SPAN_ID}-01"
OTHER_TRACE_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def heartbeat(run_id: str = "run_1", *, trace_parent: str | None = TRACE_PARENT) -> Envelope:
    wrapped = Envelope.wrap(RunHeartbeat(run_id=run_id, worker_id="w"), key=run_id, actor=ACTOR)
    return Envelope(**{**vars(wrapped), "trace_parent": trace_parent})


def caused(cause: Envelope) -> Envelope:
    return Envelope.wrap(RunHeartbeat(run_id=cause.key, worker_id="x"), key=cause.key, actor=ACTOR, cause=cause)


def ids(trace_parent: str | None) -> tuple[str, str]:
    """(trace id, parent span id) of a traceparent value."""
    context = tracing.parse(trace_parent)
    assert context is not None, trace_parent
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def hex_ids(span) -> tuple[str, str, str | None]:
    """(trace id, span id, parent span id) of a recorded span."""
    context = span.get_span_context()
    parent = f"{span.parent.span_id:016x}" if span.parent is not None else None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}", parent


@pytest.fixture
def spans():
    with trace_collector.recorded_spans() as exporter:
        yield exporter


# --- the W3C value -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None, "", "garbage", "00-" + "0" * 32 + f"-{CAUSE_SPAN_ID}-01", f"00-{TRACE_ID}-{'0' * 16}-01",
        f"ff-{TRACE_ID}-{CAUSE_SPAN_ID}-01", f"00-{TRACE_ID}-{CAUSE_SPAN_ID}-01-extra", f"00-{TRACE_ID.upper()}-{CAUSE_SPAN_ID}-01",
        f"00-{TRACE_ID[:-1]}-{CAUSE_SPAN_ID}-01",
    ],
)
def test_a_malformed_traceparent_names_no_span(value) -> None:
    assert tracing.parse(value) is None


def test_a_valid_traceparent_round_trips() -> None:
    context = tracing.parse(TRACE_PARENT)
    assert context is not None and context.is_remote and context.trace_flags.sampled
    assert tracing.format_trace_parent(context) == TRACE_PARENT
    assert tracing.parse(f"01-{TRACE_ID}-{CAUSE_SPAN_ID}-00-a-later-field") is not None  # a later version's layout


# --- tracing off: no SDK, the trace id still travels ---------------------------------------------------------------


def test_without_the_sdk_a_caused_envelope_carries_its_causes_traceparent() -> None:
    assert not tracing.enabled()
    assert caused(heartbeat()).trace_parent == TRACE_PARENT
    assert caused(heartbeat(trace_parent=None)).trace_parent is None
    assert Envelope.wrap(RunHeartbeat(run_id="r", worker_id="w"), key="r", actor=ACTOR).trace_parent is None


def test_without_the_sdk_a_request_puts_its_callers_trace_or_a_new_one_on_what_it_appends() -> None:
    with tracing.continued(TRACE_PARENT, "POST"):
        honoured = Envelope.wrap(RunHeartbeat(run_id="r", worker_id="w"), key="r", actor=ACTOR)
    assert honoured.trace_parent == TRACE_PARENT
    with tracing.continued("00-not-a-trace", "POST"):
        replaced = Envelope.wrap(RunHeartbeat(run_id="r", worker_id="w"), key="r", actor=ACTOR)
    trace_id, _ = ids(replaced.trace_parent)
    assert trace_id != TRACE_ID and replaced.trace_parent.endswith("-00")  # new, and not sampled: nothing records it
    assert tracing.current() is None  # the request's context ends with it


async def test_without_the_sdk_a_reaction_makes_no_spans_and_continues_the_trace(embedded_log: EmbeddedLog) -> None:
    cause = heartbeat()
    await embedded_log.append([encode(CODEC, cause, topic="in")])
    written = await _react_once(embedded_log, cause)
    assert CODEC.decode(written.value).trace_parent == TRACE_PARENT


# --- tracing on: the SDK records ------------------------------------------------------------------------------------


def test_an_envelope_caused_in_a_reaction_continues_its_causes_trace_from_the_reactions_span(spans) -> None:
    cause = heartbeat()
    with tracing.reaction("echo", [cause], attributes={"messaging.consumer.group.name": "echo"}):
        made = caused(cause)
    [reacting] = spans.get_finished_spans()
    trace_id, span_id, parent_id = hex_ids(reacting)
    assert (reacting.name, trace_id, parent_id) == ("echo", TRACE_ID, CAUSE_SPAN_ID)
    assert ids(made.trace_parent) == (TRACE_ID, span_id)
    assert made.causation_id == cause.event_id


def test_a_reaction_that_causes_nothing_records_nothing_unless_every_trace_is_asked(spans) -> None:
    with tracing.reaction("watcher", [heartbeat()]):
        pass
    assert spans.get_finished_spans() == ()
    with tracing.reaction("projector", [heartbeat(), heartbeat("run_2")], every_trace=True):
        pass
    [projected] = spans.get_finished_spans()  # one per trace, not per envelope
    assert hex_ids(projected)[::2] == (TRACE_ID, CAUSE_SPAN_ID)


def test_a_batch_of_two_traces_continues_each_in_its_own(spans) -> None:
    first, second = heartbeat("run_1"), heartbeat("run_2", trace_parent=OTHER_TRACE_PARENT)
    with tracing.reaction("echo", [first, second]):
        made_first, made_second = caused(first), caused(second)
        again = caused(first)
    reactions = {hex_ids(span)[0]: span for span in spans.get_finished_spans()}
    assert set(reactions) == {TRACE_ID, ids(OTHER_TRACE_PARENT)[0]}
    assert ids(made_first.trace_parent) == (TRACE_ID, hex_ids(reactions[TRACE_ID])[1])
    assert ids(made_second.trace_parent) == ids(OTHER_TRACE_PARENT)[:1] + (hex_ids(reactions[ids(OTHER_TRACE_PARENT)[0]])[1],)
    assert again.trace_parent == made_first.trace_parent  # one span per trace per batch
    assert hex_ids(reactions[ids(OTHER_TRACE_PARENT)[0]])[2] == ids(OTHER_TRACE_PARENT)[1]


def test_spans_inside_a_reaction_and_what_they_cause_form_one_tree(spans) -> None:
    cause = heartbeat()
    with tracing.reaction("prompt-builder", [cause]):
        with tracing.reacting_to(cause):
            with tracing.span("retrieval"):
                pass
            with tracing.span("route"):
                inside = caused(cause)
            after = caused(cause)
    by_name = {span.name: span for span in spans.get_finished_spans()}
    reaction_id = hex_ids(by_name["prompt-builder"])[1]
    assert hex_ids(by_name["retrieval"])[::2] == (TRACE_ID, reaction_id)
    assert hex_ids(by_name["route"])[::2] == (TRACE_ID, reaction_id)
    assert ids(inside.trace_parent) == (TRACE_ID, hex_ids(by_name["route"])[1])  # the span in hand, when in the trace
    assert ids(after.trace_parent) == (TRACE_ID, reaction_id)


def test_a_span_started_from_a_cause_outside_any_reaction_is_its_child(spans) -> None:
    cause = heartbeat()
    with tracing.span("execute_tool search", cause=cause):
        made = caused(cause)
    tracing.record("queue wait", cause=cause, start=cause.occurred_at)
    calling, waiting = spans.get_finished_spans()
    assert hex_ids(calling)[::2] == (TRACE_ID, CAUSE_SPAN_ID)
    assert hex_ids(waiting)[::2] == (TRACE_ID, CAUSE_SPAN_ID)
    assert ids(made.trace_parent) == (TRACE_ID, hex_ids(calling)[1])


async def test_a_task_that_outlives_its_reaction_does_not_revive_the_reactions_span(spans) -> None:
    cause = heartbeat()
    reaction_over = asyncio.Event()

    async def later() -> Envelope:  # a task started in the reaction (it copies the reaction's context) that runs on
        await reaction_over.wait()
        return caused(cause)

    with tracing.reaction("tool-runners", [cause]):
        task = asyncio.create_task(later())
    reaction_over.set()
    made = await task
    assert made.trace_parent == TRACE_PARENT  # continued from the cause itself: the reaction's span is over
    assert spans.get_finished_spans() == ()


def test_a_request_continues_a_valid_traceparent_and_replaces_a_malformed_one(spans) -> None:
    with tracing.continued(TRACE_PARENT, "POST"):
        honoured = Envelope.wrap(RunHeartbeat(run_id="r", worker_id="w"), key="r", actor=ACTOR)
    with tracing.continued("00-zzz-1-01", "POST"):
        replaced = Envelope.wrap(RunHeartbeat(run_id="r", worker_id="w"), key="r", actor=ACTOR)
    continued_span, new_span = spans.get_finished_spans()
    assert hex_ids(continued_span)[::2] == (TRACE_ID, CAUSE_SPAN_ID)
    assert ids(honoured.trace_parent) == (TRACE_ID, hex_ids(continued_span)[1])
    assert new_span.parent is None and hex_ids(new_span)[0] != TRACE_ID
    assert ids(replaced.trace_parent) == hex_ids(new_span)[:2]


async def test_the_runtime_reacts_in_a_span_of_the_causes_trace(spans, embedded_log: EmbeddedLog) -> None:
    cause = heartbeat()
    await embedded_log.append([encode(CODEC, cause, topic="in")])
    written = await _react_once(embedded_log, cause)
    [reacting] = spans.get_finished_spans()
    assert reacting.name == "echo" and reacting.attributes["messaging.consumer.group.name"] == "echo"
    assert hex_ids(reacting)[::2] == (TRACE_ID, CAUSE_SPAN_ID)
    assert ids(CODEC.decode(written.value).trace_parent) == (TRACE_ID, hex_ids(reacting)[1])


async def _react_once(log: EmbeddedLog, cause: Envelope):
    """Run one batch of an echo processor (each input causes one output) over what `in` holds; the output's record."""

    async def react(deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        return [encode(CODEC, caused(delivery.envelope), topic="out") for delivery in deliveries]

    processor = Processor(group="echo", topics=("in",), react=react)
    batch = await log.read("in", key=cause.key)
    await process_batch(
        processor, batch, log=log, codec=CODEC, commit=ConsumerCommit.through("echo", batch), attempts=Attempts()
    )
    [written] = await log.read("out", key=cause.key)
    return written
