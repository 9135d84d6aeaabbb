"""Rolling summaries: pure folding, the summarizer's trigger, and a 300-turn conversation whose prompts stay bounded."""

import asyncio
from datetime import UTC, datetime

import pytest

from commands.bus import CommandBus
from commands.catalog import COMMAND_TYPES, CreateConversation, SubmitTurn
from commands.handler import CommandHandler
from events.catalog import EVENT_TYPES
from kernel.codec import AvroCodec
from events.conversation import AssistantTurnFinished, ConversationSummarized
from events.embedded import EmbeddedLog
from events.runs import InferenceRequested, PromptAssembled
from events.topics import CONVERSATION_EVENTS, RUN_EVENTS, SUMMARIES
from kernel.envelope import Actor, Envelope
from kernel.runtime import encode
from events.values import ContentPart, SummaryFact, text_of
from inference.scripted import ScriptedEngine
from inference.tokenizers import WordTokenizer
from inference.worker import InferenceWorker
from processors.prompting import PromptBuilder, PromptPolicy
from kernel.runtime import run_processor
from processors.summaries import FoldedTurn, SummaryPolicy, fact_score, roll_summary, summary_text
from processors.summarizer import Summarizer

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
ANA = Actor(user_id="ana", org_id="acme", workspace_id="research")
WORDS = WordTokenizer()


def test_statements_score_and_small_talk_or_questions_do_not() -> None:
    assert fact_score("My dog's name is Biscuit.") > 0
    assert fact_score("The invoice total was 4200 euros.") > 0
    assert fact_score("tell me more about the weather") == 0
    assert fact_score("What is my dog's name?") == 0
    assert fact_score("ok thanks") == 0


def test_rolling_keeps_user_facts_once_and_drops_the_weakest_oldest_first_to_fit() -> None:
    turns = [
        FoldedTurn(turn_seq=1, role="user", text="My dog's name is Biscuit. tell me a joke"),
        FoldedTurn(turn_seq=2, role="assistant", text="My answer is 42 and I am a model."),
        FoldedTurn(turn_seq=3, role="user", text="I live in Porto. My dog's name is Biscuit."),
        FoldedTurn(turn_seq=5, role="user", text="the weather here is nice with Sun"),
    ]
    facts = roll_summary((), turns, max_tokens=100, count_tokens=WORDS.count)
    assert [(f.turn_seq, f.text) for f in facts] == [
        (1, "My dog's name is Biscuit."), (3, "I live in Porto."), (5, "the weather here is nice with Sun"),
    ]
    tight = roll_summary(facts, [], max_tokens=WORDS.count(summary_text(facts[:2])), count_tokens=WORDS.count)
    assert [f.turn_seq for f in tight] == [1, 3]  # the weakest fact (score 1) went first
    assert summary_text([SummaryFact(turn_seq=3, text="I live in Porto.")]).endswith("- (turn 3) I live in Porto.")


def test_only_a_conversation_longer_than_the_turns_kept_verbatim_can_have_a_summary() -> None:
    assert not SummaryPolicy(keep_recent_turns=6).may_have_summary(6)
    assert SummaryPolicy(keep_recent_turns=6).may_have_summary(7)
    assert SummaryPolicy(keep_recent_turns=0).may_have_summary(1)


async def test_a_conversation_too_short_for_a_summary_reads_none(embedded_log: EmbeddedLog) -> None:
    """The prompt builder skips the summary's read (a lookup of the broker on Kafka, on the first token's path) for a
    conversation its summarizer could not have summarized yet; past that it reads the newest summary."""
    log = embedded_log
    builder = PromptBuilder(
        log=log, codec=CODEC, policy=PromptPolicy(system_prompt="You are turnlog."), tokenizer=WORDS,
        summary_policy=SummaryPolicy(keep_recent_turns=1),
    )
    tasks = [
        asyncio.create_task(run_processor(CommandHandler(log=log, codec=CODEC).processor(), log=log, codec=CODEC)),
        asyncio.create_task(run_processor(builder.processor(), log=log, codec=CODEC)),
        asyncio.create_task(InferenceWorker(log=log, codec=CODEC, engine=ScriptedEngine(answer_tokens=4)).run()),
    ]
    bus = CommandBus(log=log, codec=CODEC)
    await bus.start()
    try:
        await bus.send(CreateConversation(conversation_id="conv_short", workspace_id="research"), actor=ANA)
        # Not one the summarizer would write for one turn: if the builder read it, the first prompt would carry it.
        summary = ConversationSummarized(
            conversation_id="conv_short", version=1, through_turn_seq=1, facts=(SummaryFact(turn_seq=1, text="I live in Porto."),),
            summarized_at=datetime.now(UTC),
        )
        await log.append([encode(CODEC, Envelope.wrap(summary, key="conv_short", actor=ANA), topic=SUMMARIES)])
        versions = []
        for number, question in enumerate(["My dog is called Biscuit.", "What is my dog called?"], start=1):
            accepted = await bus.send(
                SubmitTurn(conversation_id="conv_short", run_id=f"run_short{number}", content=(ContentPart(type="text", text=question),),
                           request_fingerprint=str(number)),
                actor=ANA,
            )
            await finished(log, "conv_short", accepted.run_id)
            [manifest] = [
                payload for record in await log.read(RUN_EVENTS, key=accepted.run_id)
                if isinstance(payload := CODEC.decode(record.value).payload, PromptAssembled)
            ]
            versions.append(manifest.summary_version)
    finally:
        await bus.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert versions == [None, 1]  # one turn: no summary read; three (the answer between): the summary


@pytest.mark.slow  # 300 turns through the decider, prompt builder, summarizer and worker (~15 s)
async def test_a_300_turn_conversation_keeps_its_prompts_bounded_and_remembers_turn_3(embedded_log: EmbeddedLog) -> None:
    log = embedded_log
    policy = PromptPolicy(context_tokens=400, max_output_tokens=40, system_prompt="You are turnlog.")  # 360-token prompts
    summaries = SummaryPolicy(trigger_tokens=150, keep_recent_turns=4, max_tokens=80)
    builder = PromptBuilder(log=log, codec=CODEC, policy=policy, tokenizer=WORDS, summary_policy=summaries)
    tasks = [
        asyncio.create_task(run_processor(CommandHandler(log=log, codec=CODEC).processor(), log=log, codec=CODEC)),
        asyncio.create_task(run_processor(builder.processor(), log=log, codec=CODEC)),
        asyncio.create_task(builder.follow_summaries()),  # as `turnlog serve` runs it: the summaries read once, then followed
        asyncio.create_task(run_processor(
            Summarizer(log=log, codec=CODEC, tokenizer=WORDS, policy=summaries).processor(), log=log, codec=CODEC,
        )),
        asyncio.create_task(InferenceWorker(log=log, codec=CODEC, engine=ScriptedEngine(answer_tokens=12)).run()),
    ]
    bus = CommandBus(log=log, codec=CODEC)
    await bus.start()
    try:
        await bus.send(CreateConversation(conversation_id="conv_long", workspace_id="research"), actor=ANA)
        questions = ["hello there, let us talk for a long while", "My dog's name is Biscuit and she is 7 years old."]
        questions += [f"tell me more about the weather and the sea in turn {n}" for n in range(3, 300)]
        questions += ["What is my dog's name and how old is she?"]
        for number, question in enumerate(questions, start=1):
            accepted = await bus.send(
                SubmitTurn(conversation_id="conv_long", run_id=f"run_{number:03d}", content=(ContentPart(type="text", text=question),),
                           request_fingerprint=str(number)),
                actor=ANA,
            )
            await finished(log, "conv_long", accepted.run_id)
    finally:
        await bus.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    manifests = [
        payload
        for number in range(1, 301)
        for record in await log.read(RUN_EVENTS, key=f"run_{number:03d}")
        if isinstance(payload := CODEC.decode(record.value).payload, PromptAssembled)
    ]
    assert len(manifests) == 300
    assert max(m.prompt_tokens for m in manifests) <= policy.budget_tokens  # bounded, all the way
    assert manifests[-1].summary_version is not None and 3 not in manifests[-1].turn_seqs
    summaries = [CODEC.decode(r.value).payload for r in await log.read(SUMMARIES, key="conv_long")]
    assert all(isinstance(s, ConversationSummarized) for s in summaries) and len(summaries) >= 10
    [last_request] = [
        p for r in await log.read("inference-requests.interactive", key="run_300")
        if isinstance(p := CODEC.decode(r.value).payload, InferenceRequested)
    ]
    assert any("(turn 3) My dog's name is Biscuit and she is 7 years old." in m.content for m in last_request.messages)
    answer = [p for r in await log.read(CONVERSATION_EVENTS, key="conv_long")
              if isinstance(p := CODEC.decode(r.value).payload, AssistantTurnFinished) and p.run_id == "run_300"]
    assert "Biscuit" in text_of(answer[0].content)  # the answer used the fact, through the summary


async def finished(log: EmbeddedLog, conversation_id: str, run_id: str) -> None:
    follower = log.follow(CONVERSATION_EVENTS, key=conversation_id)
    try:
        async with asyncio.timeout(10):
            async for record in follower:
                payload = CODEC.decode(record.value).payload
                if isinstance(payload, AssistantTurnFinished) and payload.run_id == run_id:
                    return
    finally:
        await follower.aclose()

