"""The newest summary of a conversation, as the prompt builder reads it: read from the log once, then kept current by
a follower of the summaries topic (without one: read after the one last seen, not again from the conversation's start)."""

import asyncio
from datetime import UTC, datetime

from e2e_server import eventually
from events.catalog import EVENT_TYPES
from events.conversation import ConversationSummarized
from events.topics import SUMMARIES
from events.values import SummaryFact
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.runtime import encode
from processors.newest_summaries import NewestSummaries
from tests.projections.snapshot_writing import ReadsRecorded

CODEC = AvroCodec(payload_types=EVENT_TYPES)
ANA = Actor(user_id="user_ana", org_id="org_acme", workspace_id="ws")


def summary(conversation_id: str, version: int) -> ConversationSummarized:
    return ConversationSummarized(
        conversation_id=conversation_id, version=version, through_turn_seq=2 * version,
        facts=(SummaryFact(turn_seq=1, text=f"fact {version}"),), summarized_at=datetime.now(UTC),
    )


async def publish(log, *summaries: ConversationSummarized) -> int:
    written = await log.append([
        encode(CODEC, Envelope.wrap(s, key=s.conversation_id, actor=ANA), topic=SUMMARIES) for s in summaries
    ])
    return written[-1].offset


async def test_the_newest_summary_is_read_after_the_last_one_seen(embedded_log) -> None:
    recorded = ReadsRecorded(embedded_log)
    newest = NewestSummaries(log=recorded, codec=CODEC)
    assert await newest.of("conv_a") is None  # none yet
    first = await publish(embedded_log, summary("conv_a", 1), summary("conv_b", 1))
    assert (await newest.of("conv_a")).version == 1
    latest = await publish(embedded_log, summary("conv_a", 2), summary("conv_a", 3), summary("conv_b", 2))
    assert (await newest.of("conv_a")).version == 3
    assert (await newest.of("conv_a")).version == 3  # nothing newer: still the newest
    assert recorded.afters == [-1, -1, first - 1, latest - 1]
    assert (await newest.of("conv_b")).version == 2


async def test_a_conversation_forgotten_beyond_the_capacity_is_read_from_its_start_again(embedded_log) -> None:
    recorded = ReadsRecorded(embedded_log)
    newest = NewestSummaries(log=recorded, codec=CODEC, capacity=1)
    await publish(embedded_log, summary("conv_a", 1), summary("conv_b", 1))
    await newest.of("conv_a")
    await newest.of("conv_b")
    assert (await newest.of("conv_a")).version == 1
    assert recorded.afters[-1] == -1


async def test_newer_summaries_of_a_held_conversation_come_from_the_follower_not_from_reads(embedded_log) -> None:
    recorded = ReadsRecorded(embedded_log)
    newest = NewestSummaries(log=recorded, codec=CODEC)
    following = asyncio.create_task(newest.follow())
    try:
        async def started() -> bool:
            return newest.following

        await eventually(started, "the follower started")
        await publish(embedded_log, summary("conv_a", 1))
        assert (await newest.of("conv_a")).version == 1  # first asked: read from the log
        await publish(embedded_log, summary("conv_a", 2), summary("conv_b", 1), summary("conv_a", 3))

        async def newest_is_3() -> bool:
            return (await newest.of("conv_a")).version == 3

        await eventually(newest_is_3, "conv_a's third summary followed")
        assert recorded.afters == [-1]  # the one read: every later call answered from what the follower kept
        assert (await newest.of("conv_b")).version == 1  # never asked before: not followed, read once
        assert recorded.afters == [-1, -1]
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    assert not newest.following
