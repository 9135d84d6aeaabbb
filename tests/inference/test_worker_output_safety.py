"""The inference worker's output safety stage, through its port, with the real stages, the real log and the scripted engine.

A window that violates the policy stops the generation before its delta goes out, the stream's end carries the
fallback; the whole answer is checked before `FinishRun`: allowed, redacted or replaced, and the decision is on
the run's events.
"""

import asyncio
from pathlib import Path

import pytest

from commands.catalog import COMMAND_TYPES, FinishRun
from events.catalog import EVENT_TYPES
from events.embedded import EmbeddedLog
from events.runs import AssistantDelta, InferenceRequested
from events.safety import SafetyDecision
from events.topics import COMMANDS, RUN_EVENTS, inference_topic
from events.values import ChatMessage
from inference.scripted import ScriptedEngine
from inference.worker import InferenceWorker
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.log import OutgoingRecord
from processors.safety.checks import SafetyChecks
from processors.safety.stages import SafetyStages
from tests.conftest import load_test_module

keywords = load_test_module("keywords", beside=Path(__file__).parents[1] / "processors" / "safety" / "conftest.py")

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
ACME = Actor(user_id="ana", org_id="acme", workspace_id="research")
POLICIES = keywords.policies("""
version = "v3"
[orgs.acme.output]
classifiers = ["words"]
pii = { action = "redact" }
harassment = { action = "replace", reason = "That answer was withheld." }
""")


async def ask(log: EmbeddedLog, run_id: str, question: str, *, actor: Actor = ACME, tokens: int = 400) -> None:
    payload = InferenceRequested(run_id=run_id, conversation_id=f"conv_{run_id}", turn_seq=2, pool="interactive",
                                 messages=(ChatMessage(role="user", content=question),), max_output_tokens=tokens)
    envelope = Envelope.wrap(payload, key=run_id, actor=actor)
    await log.append([OutgoingRecord(topic=inference_topic("interactive"), key=run_id, value=CODEC.encode(envelope))])


async def finish_of(log: EmbeddedLog, run_id: str, timeout: float = 5.0) -> FinishRun:
    follower = log.follow(COMMANDS, key=f"conv_{run_id}")
    try:
        async with asyncio.timeout(timeout):
            async for record in follower:
                payload = CODEC.decode(record.value).payload
                if isinstance(payload, FinishRun):
                    return payload
    finally:
        await follower.aclose()
    raise AssertionError("unreachable")


async def run_events(log: EmbeddedLog, run_id: str) -> list:
    return [CODEC.decode(record.value).payload for record in await log.read(RUN_EVENTS, key=run_id)]


@pytest.fixture
async def worker(embedded_log: EmbeddedLog):
    words = keywords.Keywords(pii=("ana@example.com",), harassment=("idiot",))
    safety = SafetyStages(checks=SafetyChecks(policies=POLICIES, classifiers={"words": words}), window_chars=60, overlap_chars=10)
    engine = ScriptedEngine(answer_tokens=60, token_delay_s=0.001)
    worker = InferenceWorker(
        log=embedded_log, codec=CODEC, engine=engine, max_tokens_per_delta=4, max_delta_delay_s=0.05, output_safety=safety
    )
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.01)
    yield embedded_log
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_violating_window_stops_the_run_before_its_delta_streams(worker: EmbeddedLog) -> None:
    await ask(worker, "run_stop", "what an idiot")
    finish = await finish_of(worker, "run_stop")

    assert (finish.status, finish.text, finish.reason, finish.stream_replaced) == (
        "completed", "That answer was withheld.", "That answer was withheld.", True
    )
    events = await run_events(worker, "run_stop")
    streamed = "".join(event.text for event in events if isinstance(event, AssistantDelta))
    [stop] = [event for event in events if isinstance(event, SafetyDecision)]
    assert (stop.stage, stop.action, stop.subject, stop.triggered) == ("output", "stop", "window:1", ("harassment",))
    assert len(streamed) < 60  # the delta that completed the first window never went out
    assert finish.usage.output_tokens < 60  # and the generation was closed there


async def test_the_whole_answer_is_redacted_or_replaced_before_it_is_stored(worker: EmbeddedLog) -> None:
    await ask(worker, "run_pii", "ana@example.com", tokens=3)  # a short answer: under one window, only the final check sees it
    redacted = await finish_of(worker, "run_pii")
    assert "ana@example.com" not in redacted.text and "<PII>" in redacted.text
    assert redacted.stream_replaced and redacted.reason == "" and redacted.status == "completed"
    streamed = "".join(e.text for e in await run_events(worker, "run_pii") if isinstance(e, AssistantDelta))
    assert "ana@example.com" in streamed  # the deltas were provisional

    await ask(worker, "run_rude", "idiot", tokens=3)
    replaced = await finish_of(worker, "run_rude")
    assert (replaced.text, replaced.reason, replaced.stream_replaced) == ("That answer was withheld.", "That answer was withheld.", True)
    [decision] = [e for e in await run_events(worker, "run_rude") if isinstance(e, SafetyDecision)]
    assert (decision.action, decision.subject, decision.policy_version) == ("replace", None, "v3")


async def test_an_answer_that_passes_is_stored_as_streamed_and_its_check_recorded(worker: EmbeddedLog) -> None:
    await ask(worker, "run_fine", "tides and moons " * 10)
    finish = await finish_of(worker, "run_fine")
    events = await run_events(worker, "run_fine")
    assert finish.text == "".join(e.text for e in events if isinstance(e, AssistantDelta)) and not finish.stream_replaced
    # Windows that allow are not recorded; the whole answer's check is.
    assert [(d.action, d.subject) for d in events if isinstance(d, SafetyDecision)] == [("allow", None)]

    await ask(worker, "run_other_org", "idiot", actor=Actor(user_id="gus", org_id="globex", workspace_id="lab"))
    other = await finish_of(worker, "run_other_org")  # no output policy for globex: nothing checked, nothing recorded
    assert "idiot" in other.text and not other.stream_replaced
    assert not [e for e in await run_events(worker, "run_other_org") if isinstance(e, SafetyDecision)]
