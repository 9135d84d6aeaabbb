"""Read-your-writes without waiting for the future: reads and a cancel during a run answer while it streams.

On the embedded server and on the Kafka fleet (`slow_server`: 200 tokens 50 ms apart, ~10 s a run). The
fence passes once the projector has applied every record before the end of the conversation's partition;
it must not wait for the run's own later events (on Kafka, a group offset that trailed the transaction
markers once made every such read wait for the run's last event, and a cancel miss a short answer).
"""

from __future__ import annotations

import time

from e2e_server import create_conversation, open_stream, submit_turn, wait_for_run

SHORT_ANSWER_S = 2.0  # the answer a cancel sent at its first delta must still catch
PARTITIONS = 12  # of conversation-events (events/topology.py)


async def until_first_delta(client, run_id: str) -> float:
    async with open_stream(client, run_id) as stream:
        async for event in stream:
            if event.event == "assistant.delta":
                return time.monotonic()
    raise AssertionError(f"run {run_id} ended without a delta")


async def with_history(client, workspace: str) -> str:
    """A conversation whose partition has seen a few transactions before (markers between them), as in a
    running system: the offsets a projector commits then have holes where the markers are."""
    for _ in range(3 * PARTITIONS):
        await create_conversation(client, workspace)
    return await create_conversation(client, workspace)


async def test_fenced_reads_during_a_run_return_while_it_still_streams(slow_server):
    user = slow_server.new_user()
    async with user.client() as client:
        conversation_id = await with_history(client, user.workspace)
        accepted = await submit_turn(client, conversation_id, "tell me a long story")
        first_delta = await until_first_delta(client, accepted["runId"])

        turns = await client.get(f"/v1/conversations/{conversation_id}/turns")
        run = await client.get(f"/v1/runs/{accepted['runId']}")
        conversation = await client.get(f"/v1/conversations/{conversation_id}")
        answered_after_s = time.monotonic() - first_delta

        # All three answered while a 2-second answer would still stream: none waited for the run's later events.
        assert answered_after_s < SHORT_ANSWER_S, answered_after_s
        assert turns.status_code == 200, turns.text
        assert turns.json()["turns"][0]["turnSeq"] == 1  # the user's turn: its own write
        assert conversation.status_code == 200, conversation.text
        assert run.status_code == 200, run.text
        assert run.json()["status"] == "in_progress"  # answered before the run's own last event
        await client.post(f"/v1/runs/{accepted['runId']}/cancel")  # the fixture's next test needs no busy worker


async def test_a_cancel_at_the_first_delta_is_in_time_for_a_short_answer(slow_server):
    user = slow_server.new_user()
    async with user.client() as client:
        conversation_id = await with_history(client, user.workspace)
        accepted = await submit_turn(client, conversation_id, "cancel me at once")
        first_delta = await until_first_delta(client, accepted["runId"])

        response = await client.post(f"/v1/runs/{accepted['runId']}/cancel")
        answered_after_s = time.monotonic() - first_delta

        assert response.status_code == 202, response.text
        # A 2-second answer would still be streaming: its cancel is accepted, not 409 "already finished".
        assert answered_after_s < SHORT_ANSWER_S, answered_after_s
        assert (await wait_for_run(client, accepted["runId"], timeout_s=60))["status"] == "cancelled"
