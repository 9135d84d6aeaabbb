"""Crash safety, end to end: SIGKILL a real server mid-generation, restart it on the same data dir.

What must hold afterwards (ARCHITECTURE.md, consistency rules): every acknowledged (202) user turn
is still there; every run ends on its own (completed, or failed with a reason saying it was
interrupted), none is left in progress; the stream of an interrupted run ends with `run.failed`;
idempotency keys still return the same run; new turns work.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import e2e_server as e2e
from e2e_server import (
    TERMINAL_RUN_STATUSES,
    TurnlogServer,
    create_conversation,
    delta_text,
    get_run,
    list_turns,
    read_stream,
    submit_turn,
    text_of_turn,
    turn_by_seq,
)

pytestmark = pytest.mark.slow

LEASE_S = 2.0
ANSWER_TOKENS = 100
# Lease + a sweep period + start-up slack; a run still in progress after this is stuck for good.
SETTLE_DEADLINE_S = LEASE_S * 4 + 5


async def wait_until_terminal(client, run_ids: list[str], *, deadline_s: float) -> dict[str, dict]:
    deadline = time.monotonic() + deadline_s
    runs: dict[str, dict] = {}
    pending = set(run_ids)
    while pending:
        for run_id in sorted(pending):
            run = await get_run(client, run_id)
            if run["status"] in TERMINAL_RUN_STATUSES:
                runs[run_id] = run
                pending.discard(run_id)
        if pending and time.monotonic() > deadline:
            stuck = {run_id: (await get_run(client, run_id))["status"] for run_id in pending}
            raise AssertionError(f"runs still not finished {deadline_s}s after the restart: {stuck}")
        await asyncio.sleep(0.1)
    return runs


async def test_sigkill_mid_generation_then_restart_on_the_same_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    first = TurnlogServer(data_dir=data_dir, token_delay_ms=20, answer_tokens=ANSWER_TOKENS, run_lease_s=LEASE_S)
    first.start()
    second: TurnlogServer | None = None
    try:
        user = first.new_user()
        acknowledged: list[dict] = []  # one entry per 202: conversation, run, user turn seq, text
        retry_key = e2e.unique("turn")
        async with user.client(base_url=first.base_url) as client:
            conversations = [await create_conversation(client, user.workspace, title=f"crash {i}") for i in range(5)]

            # Conversation 0 already has a finished exchange before the crash.
            settled = await submit_turn(client, conversations[0], "a question answered before the crash")
            await read_stream(client, settled["runId"])
            acknowledged.append(
                {"conversation": conversations[0], "run": settled["runId"], "seq": 1, "text": "a question answered before the crash"}
            )

            # Then one turn in flight in every conversation, the last ones barely acknowledged.
            for index, conversation_id in enumerate(conversations):
                text = f"question {index} asked right before the crash"
                key = retry_key if index == 2 else None
                accepted = await submit_turn(client, conversation_id, text, idempotency_key=key)
                acknowledged.append(
                    {"conversation": conversation_id, "run": accepted["runId"], "seq": accepted["turnSeq"], "text": text, "key": key}
                )
        first.kill()  # right after the last 202: no shutdown code runs

        second = TurnlogServer(data_dir=data_dir, token_delay_ms=20, answer_tokens=ANSWER_TOKENS, run_lease_s=LEASE_S)
        second.start()
        async with user.client(base_url=second.base_url) as client:
            # Every acknowledged user turn survived, exactly as sent.
            for ack in acknowledged:
                turns = await list_turns(client, ack["conversation"])
                user_turn = turn_by_seq(turns, ack["seq"])
                assert user_turn["role"] == "user"
                assert user_turn["content"] == [{"type": "text", "text": ack["text"]}]

            # Every run ends by itself, and none is left in progress.
            runs = await wait_until_terminal(client, [ack["run"] for ack in acknowledged], deadline_s=SETTLE_DEADLINE_S)
            interrupted = []
            for ack in acknowledged:
                run = runs[ack["run"]]
                assert run["status"] in {"completed", "failed"}, run
                answer = turn_by_seq(await list_turns(client, ack["conversation"]), ack["seq"] + 1)
                assert answer["state"] == run["status"]
                assert answer["runId"] == ack["run"]
                events = await read_stream(client, ack["run"], timeout_s=5)
                assert events[0].event == "run.started"
                assert [int(e.id) for e in events] == sorted({int(e.id) for e in events})
                if run["status"] == "completed":
                    assert events[-1].event == "assistant.completed"
                    assert run["usage"]["outputTokens"] == ANSWER_TOKENS
                else:
                    interrupted.append(ack["run"])
                    assert "interrupt" in run["reason"].lower(), run
                    assert events[-1].event == "run.failed", [e.event for e in events]
                    assert "interrupt" in events[-1].json()["reason"].lower()
                    assert answer["reason"] == run["reason"]
                    # The partial text kept is what was streamed before the crash.
                    assert text_of_turn(answer) == delta_text(events)
                    assert len(text_of_turn(answer).split()) < ANSWER_TOKENS
            assert interrupted, "no run was mid-generation at the kill; the test did not exercise recovery"

            # The idempotency key still names the same run after the restart.
            keyed = next(ack for ack in acknowledged if ack.get("key"))
            retried = await submit_turn(client, keyed["conversation"], keyed["text"], idempotency_key=keyed["key"])
            assert (retried["runId"], retried["turnSeq"]) == (keyed["run"], keyed["seq"])

            # New turns work after the restart, and continue each conversation's sequence.
            for conversation_id in (conversations[0], conversations[4]):
                latest = (await list_turns(client, conversation_id))[-1]["turnSeq"]
                fresh = await submit_turn(client, conversation_id, "are you back")
                assert fresh["turnSeq"] == latest + 1
                events = await read_stream(client, fresh["runId"], timeout_s=15)
                assert events[-1].event == "assistant.completed"
                answer = turn_by_seq(await list_turns(client, conversation_id), latest + 2)
                assert answer["parentTurnSeq"] == latest + 1
                assert text_of_turn(answer) == delta_text(events)
                assert (await get_run(client, fresh["runId"]))["status"] == "completed"
    finally:
        first.kill()
        if second is not None:
            second.stop()
