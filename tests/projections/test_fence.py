"""The read-your-writes fence: a query waits for the projector's committed offset to reach the log's end."""

import asyncio
import logging

import pytest

from events.embedded import EmbeddedLog
from kernel.log import ConsumerCommit, OutgoingRecord
from events.topics import CONVERSATION_EVENTS, DOCUMENTS
from projections.fence import ReadYourWritesFence
from kernel.errors import Unavailable


async def test_waits_until_the_group_has_committed_the_end_of_the_partition(embedded_log: EmbeddedLog) -> None:
    written = await embedded_log.append([OutgoingRecord(topic=CONVERSATION_EVENTS, key="c", value=b"x")])
    fence = ReadYourWritesFence(log=embedded_log, group="read-models")
    waiting = asyncio.create_task(fence.caught_up(key="c"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await embedded_log.commit(ConsumerCommit.through("read-models", written))
    fence.notify()  # what the in-process projector does after each batch
    await asyncio.wait_for(waiting, 0.5)


async def test_an_idle_log_is_caught_up_and_a_stuck_projector_times_out(
    embedded_log: EmbeddedLog, caplog: pytest.LogCaptureFixture
) -> None:
    fence = ReadYourWritesFence(log=embedded_log, group="read-models")
    await fence.caught_up()
    written = await embedded_log.append([OutgoingRecord(topic=CONVERSATION_EVENTS, key="c", value=b"x")])
    with caplog.at_level(logging.WARNING, logger="projections.fence"), pytest.raises(Unavailable):
        await fence.caught_up(timeout_s=0.05)
    # The operator learns which partition held the read back, and how far the projector had come.
    assert f"group read-models had committed partition 0 through -1 of {written[-1].offset}" in caplog.text
    with caplog.at_level(logging.WARNING, logger="projections.fence"), pytest.raises(Unavailable):
        await fence.caught_up(key="c", timeout_s=0.05)
    assert f"key c's partition through -1 of {written[-1].offset}" in caplog.text


async def test_a_fence_on_another_topic_waits_for_that_topic_alone(embedded_log: EmbeddedLog) -> None:
    documents = await embedded_log.append([OutgoingRecord(topic=DOCUMENTS, key="file_1", value=b"x")])
    await embedded_log.append([OutgoingRecord(topic=CONVERSATION_EVENTS, key="c", value=b"x")])
    fence = ReadYourWritesFence(log=embedded_log, group="read-models")
    with pytest.raises(Unavailable):
        await fence.caught_up(key="file_1", topic=DOCUMENTS, timeout_s=0.05)
    await embedded_log.commit(ConsumerCommit.through("read-models", documents))
    await fence.caught_up(key="file_1", topic=DOCUMENTS, timeout_s=0.5)
    await fence.caught_up(topic=DOCUMENTS, timeout_s=0.5)
    with pytest.raises(Unavailable):  # the conversation events are still behind, and the default topic
        await fence.caught_up(timeout_s=0.05)


async def test_a_fence_given_its_own_write_waits_for_that_offset_not_for_later_writes(embedded_log: EmbeddedLog) -> None:
    own = await embedded_log.append([OutgoingRecord(topic=CONVERSATION_EVENTS, key="c", value=b"mine")])
    await embedded_log.append([OutgoingRecord(topic=CONVERSATION_EVENTS, key="c", value=b"someone else's, later")])
    fence = ReadYourWritesFence(log=embedded_log, group="read-models")
    with pytest.raises(Unavailable):
        await fence.caught_up(key="c", offset=own[-1].offset, timeout_s=0.05)
    await embedded_log.commit(ConsumerCommit.through("read-models", own))
    await fence.caught_up(key="c", offset=own[-1].offset, timeout_s=0.5)
    with pytest.raises(Unavailable):  # the partition's end is still ahead
        await fence.caught_up(key="c", timeout_s=0.05)
