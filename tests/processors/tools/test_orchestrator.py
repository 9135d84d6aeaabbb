"""The tool loop's processor on a real embedded log: a loop that starts after another one stopped takes back the
runs left with open calls, so their ticks (and with them the runner's grace and the run's lease) go on."""

from collections.abc import Mapping, Sequence
from datetime import timedelta

from events.catalog import EVENT_TYPES
from events.embedded import EmbeddedLog
from events.runs import RunFinished
from events.tools import ToolCallFinished, ToolCallRequested, ToolCallsProposed, ToolCallStarted, ToolLoopTicked
from events.topics import RUN_EVENTS
from events.values import ToolCallProposal, Usage
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope, utc_now
from kernel.log import ConsumerCommit
from kernel.runtime import Delivery, encode
from processors.tools.loop import LoopBudget, ToolRules
from processors.tools.orchestrator import TOOL_LOOP_GROUP, ToolLoop

ACTOR = Actor(user_id="u", org_id="o", workspace_id="w")
CODEC = AvroCodec(payload_types=EVENT_TYPES)
SLOW = ToolRules(name="slow", parameters={"type": "object"}, timeout_s=5.0, idempotent=True)
STARTED_AT = utc_now()
RUNS = ("run_open", "run_done", "run_ended_by_watchdog")


async def rules_for(actor: Actor) -> Mapping[str, ToolRules]:
    return {SLOW.name: SLOW}


def new_loop(log: EmbeddedLog) -> ToolLoop:
    return ToolLoop(log=log, codec=CODEC, rules_for=rules_for)


async def consume(loop: ToolLoop, log: EmbeddedLog) -> None:
    """What the runtime does: react to every run event the loop's group has not read, append, commit."""
    while True:
        after = await log.committed(group=TOOL_LOOP_GROUP, topic=RUN_EVENTS)
        records = sorted([r for run_id in RUNS for r in await log.read(RUN_EVENTS, key=run_id, after=after)], key=lambda r: r.offset)
        if not records:
            return
        deliveries = [Delivery(record=r, envelope=CODEC.decode(r.value)) for r in records]
        outputs = await loop.react(deliveries)
        await log.append(outputs, commit=ConsumerCommit.through(TOOL_LOOP_GROUP, records))


async def append(log: EmbeddedLog, *events: object) -> None:
    await log.append([encode(CODEC, Envelope.wrap(e, key=e.run_id, actor=ACTOR), topic=RUN_EVENTS) for e in events])


def proposal(run_id: str) -> ToolCallsProposed:
    return ToolCallsProposed(
        run_id=run_id, conversation_id="conv_1", step=1, text="", proposed_at=STARTED_AT, topic="inference-requests.interactive",
        calls=(ToolCallProposal(call_id="call_1", name="slow", arguments="{}"),),
    )


def started(run_id: str) -> ToolCallStarted:
    return ToolCallStarted(run_id=run_id, call_id="call_1", attempt=1, runner_id="runner-that-dies", started_at=STARTED_AT)


async def events_of(log: EmbeddedLog, run_id: str, kind: type) -> Sequence[object]:
    return [e for r in await log.read(RUN_EVENTS, key=run_id) if isinstance(e := CODEC.decode(r.value).payload, kind)]


async def test_a_new_loop_takes_back_the_runs_an_earlier_one_left_with_open_calls(embedded_log: EmbeddedLog) -> None:
    log = embedded_log
    earlier = new_loop(log)
    # Three runs whose calls a runner started; one of them finishes, one is ended by the watchdog.
    for run_id in RUNS:
        await append(log, proposal(run_id))
        await consume(earlier, log)
        await append(log, started(run_id))
    await consume(earlier, log)
    await earlier.tick(STARTED_AT + timedelta(seconds=1))
    await consume(earlier, log)  # its ticks, read back: all behind the mark now
    await append(log, RunFinished(run_id="run_ended_by_watchdog", conversation_id="conv_1", turn_seq=2, status="failed", usage=Usage()))
    await append(log, ToolCallFinished(
        run_id="run_done", call_id="call_1", step=1, tool_name="slow", status="completed", result="ok", attempt=1,
        finished_at=STARTED_AT, runner_id="runner-that-dies",
    ))
    await consume(earlier, log)
    # The process dies; a new one starts on the same log. Nothing new arrives for run_open.
    later = new_loop(log)
    await later.tick(STARTED_AT + timedelta(seconds=2))
    assert len(await events_of(log, "run_open", ToolLoopTicked)) == 1, "before recovering, it knows no open run"

    await later.recover()
    past_the_grace = STARTED_AT + timedelta(seconds=SLOW.timeout_s + LoopBudget().runner_grace_s)
    await later.tick(past_the_grace)
    await consume(later, log)

    assert len(await events_of(log, "run_open", ToolLoopTicked)) == 2
    for closed in ("run_done", "run_ended_by_watchdog"):  # the earlier loop's tick only
        assert len(await events_of(log, closed, ToolLoopTicked)) == 1, closed
    # Its runner is presumed dead: the call is asked for again, with the same key.
    requests = await events_of(log, "run_open", ToolCallRequested)
    assert [(r.attempt, r.idempotency_key) for r in requests] == [(1, "run_open:call_1"), (2, "run_open:call_1")]


async def test_without_a_mark_the_new_loop_reads_all_of_run_events(embedded_log: EmbeddedLog) -> None:
    earlier = new_loop(embedded_log)
    await append(embedded_log, proposal("run_open"))
    await consume(earlier, embedded_log)  # the loop decided, but never ticked (it died first)
    later = new_loop(embedded_log)

    await later.recover()
    await later.tick(STARTED_AT + timedelta(seconds=1))

    assert len(await events_of(embedded_log, "run_open", ToolLoopTicked)) == 1
