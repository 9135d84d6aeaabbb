"""Retention of run events on the embedded log: what is trimmed, when (by event time, on a controlled clock), and
that the durable history, recent streams and the file's size come through it."""

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from api.context import Limits
from api.runs import run_events
from events.embedded import EmbeddedLog
from events.retention import RunEventTrimmer, is_transient, stream_expired
from events.runs import AssistantDelta, GenerationStarted, RunFinished, RunHeartbeat, RunStarted, ToolCalled
from events.conversation import TurnSubmitted
from events.topics import CONVERSATION_EVENTS, RUN_EVENTS
from events.topology import turnlog_topics
from events.values import ContentPart, Usage
from kernel.envelope import Actor, Envelope, utc_now
from kernel.runtime import encode
from kernel.sse import SSEDecoder
from turnlog.adapters import build_codec

CODEC = build_codec()
ALICE = Actor(user_id="alice", org_id="org_a", workspace_id="ws_a")
WEEK = timedelta(days=7)


def run_story(run_id: str, *, deltas: int = 6, text: str = "t") -> list:
    """A run's events as a worker writes them: start, claim, deltas with heartbeats between, a tool, the finish."""
    events: list = [RunStarted(run_id=run_id, conversation_id="conv", turn_seq=1)]
    events.append(GenerationStarted(run_id=run_id, worker_id="w1", pool="interactive"))
    for index in range(deltas):
        events.append(AssistantDelta(run_id=run_id, index=index, text=f"{text}{index} "))
        events.append(RunHeartbeat(run_id=run_id, worker_id="w1"))
    events.append(ToolCalled(run_id=run_id, call_id="c1", tool_name="clock", arguments="{}"))
    usage = Usage(prompt_tokens=3, output_tokens=deltas)
    events.append(RunFinished(run_id=run_id, conversation_id="conv", turn_seq=1, status="completed", usage=usage))
    return events


async def append_story(log: EmbeddedLog, run_id: str, *, together: bool = False, **kwargs) -> None:
    records = [encode(CODEC, Envelope.wrap(event, key=run_id, actor=ALICE), topic=RUN_EVENTS) for event in run_story(run_id, **kwargs)]
    if together:
        await log.append(records, durable=False)
        return
    for record in records:  # one append each, as the worker does: distinct append times
        await log.append([record])


async def types_of(log: EmbeddedLog, run_id: str) -> list[str]:
    return [CODEC.decode(record.value).type for record in await log.read(RUN_EVENTS, key=run_id)]


async def started_log(tmp_path: Path) -> EmbeddedLog:
    log = EmbeddedLog(path=tmp_path / "log.db")
    await log.start()
    return log


def test_only_heartbeats_and_later_deltas_are_transient() -> None:
    assert is_transient(RunHeartbeat(run_id="r", worker_id="w"))
    assert is_transient(AssistantDelta(run_id="r", index=3, text="x"))
    assert not is_transient(AssistantDelta(run_id="r", index=0, text="x"))  # the run ledger's first token
    durable = [event for event in run_story("r") if not isinstance(event, (RunHeartbeat, AssistantDelta))]
    assert durable and not any(is_transient(event) for event in durable)


def test_a_stream_expires_after_the_retention_period_unless_kept_forever() -> None:
    now = utc_now()
    assert stream_expired(now - WEEK - timedelta(seconds=1), now=now, retention=WEEK)
    assert not stream_expired(now - WEEK + timedelta(seconds=1), now=now, retention=WEEK)
    assert not stream_expired(now - 100 * WEEK, now=now, retention=None)


async def test_trims_transient_run_events_older_than_the_retention_period_and_nothing_else(tmp_path: Path) -> None:
    log = await started_log(tmp_path)
    try:
        await append_story(log, "run_old")
        submitted = TurnSubmitted(conversation_id="conv", turn_seq=1, content=(ContentPart(type="text", text="hi"),),
                                  submitted_at=utc_now())
        await log.append([encode(CODEC, Envelope.wrap(submitted, key="conv", actor=ALICE), topic=CONVERSATION_EVENTS)])
        before = await types_of(log, "run_old")

        six_days_on = RunEventTrimmer(log=log, codec=CODEC, retention=WEEK, clock=lambda: utc_now() + timedelta(days=6))
        assert (await six_days_on.trim_once()).trimmed == 0
        assert await types_of(log, "run_old") == before

        eight_days_on = RunEventTrimmer(log=log, codec=CODEC, retention=WEEK, clock=lambda: utc_now() + timedelta(days=8),
                                        batch_size=4)  # several bounded batches
        trimmed = await eight_days_on.trim_once()
        assert trimmed.trimmed == 5 + 6  # deltas 1..5 and every heartbeat
        assert await types_of(log, "run_old") == [
            "RunStarted", "GenerationStarted", "AssistantDelta", "ToolCalled", "RunFinished",
        ]
        assert len(await log.read(CONVERSATION_EVENTS, key="conv")) == 1  # the durable history is another topic
        assert (await eight_days_on.trim_once()).examined == 0  # done: the next pass starts where this one ended
    finally:
        await log.close()


async def test_a_recent_run_keeps_every_event_and_its_stream_still_resumes(tmp_path: Path) -> None:
    log = await started_log(tmp_path)
    try:
        await append_story(log, "run_old")
        await append_story(log, "run_new")
        [new_start] = await log.read(RUN_EVENTS, key="run_new", limit=1)
        complete = await types_of(log, "run_new")
        # The clock stands one retention period after the new run began: everything before it is old.
        trimmer = RunEventTrimmer(log=log, codec=CODEC, retention=WEEK, clock=lambda: new_start.timestamp + WEEK)
        assert (await trimmer.trim_once()).trimmed == 11
        assert await types_of(log, "run_new") == complete

        context = SimpleNamespace(log=log, codec=CODEC, limits=Limits())
        whole = await sse_events(run_events(context, "run_new", start_offset=new_start.offset))
        resumed = await sse_events(run_events(context, "run_new", start_offset=new_start.offset, already_sent=3))
        assert [event.id for event in whole] == [str(number) for number in range(1, len(whole) + 1)]
        assert [(event.id, event.data) for event in resumed] == [(event.id, event.data) for event in whole[3:]]
        assert whole[-1].event == "assistant.completed"  # the terminal event
    finally:
        await log.close()


async def test_trimming_hands_the_space_back_so_the_file_stops_growing(tmp_path: Path) -> None:
    log = await started_log(tmp_path)
    try:
        for round_ in range(3):
            for index in range(2):
                await append_story(log, f"run_{round_}_{index}", deltas=200, text="x" * 500, together=True)
            if round_ == 0:
                grown, _ = log.file_pages()
            trimmer = RunEventTrimmer(log=log, codec=CODEC, retention=WEEK, clock=lambda: utc_now() + 2 * WEEK)
            await trimmer.trim_once()
            pages, free = log.file_pages()
            if round_ == 0:
                first_pages = pages
            assert free < 1_100  # at most one vacuum step's worth is left on the free list
        assert first_pages < grown - 40  # 400 deltas of 500 bytes: ~50 pages handed back
        assert pages <= first_pages + 8  # three rounds of runs, and the file is the size of one
    finally:
        await log.close()
    assert (tmp_path / "log.db").stat().st_size <= (first_pages + 8) * 4096  # checkpointed at close


async def sse_events(chunks) -> list:
    decoder = SSEDecoder()
    events = []
    async for chunk in chunks:
        for line in chunk.decode().splitlines():
            event = decoder.decode(line)
            if event is not None:
                events.append(event)
    return events



def test_kafka_keeps_run_events_for_the_same_period() -> None:
    assert turnlog_topics().spec_for(RUN_EVENTS).topic_config()["retention.ms"] == str(7 * 24 * 3600 * 1000)
    two_days = turnlog_topics(run_events_retention=timedelta(days=2)).spec_for(RUN_EVENTS)
    assert two_days.topic_config()["retention.ms"] == str(2 * 24 * 3600 * 1000)
    assert turnlog_topics(run_events_retention=None).spec_for(RUN_EVENTS).topic_config()["retention.ms"] == "-1"
    assert turnlog_topics(run_events_retention=None).spec_for(CONVERSATION_EVENTS).retention is None
