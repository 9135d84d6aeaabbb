"""End to end over real HTTP and SSE: conversations, turns, runs, streams, idempotency, cancel, resume.

Every test talks to a real `turnlog serve --engine scripted` process (see `tests/conftest.py`) and
uses its own user, org and workspace, so tests share servers but never data.
"""

from __future__ import annotations

import asyncio

import e2e_server as e2e
from e2e_server import (
    assert_problem,
    create_conversation,
    delta_text,
    get_run,
    list_turns,
    looks_like_scripted_answer_prefix,
    open_stream,
    read_stream,
    submit_turn,
    text_of_turn,
    turn_by_seq,
    wait_for_run,
)

FAST_ANSWER_TOKENS = 30  # tests/conftest.py: fast_server


def assert_well_formed_stream(events: list, *, run_id: str, assistant_turn_seq: int, terminal: str) -> None:
    """run.started first, deltas, then exactly one terminal event last; each event has its own id."""
    assert events, "the stream sent no events"
    kinds = [event.event for event in events]
    assert kinds[0] == "run.started", kinds
    assert events[0].json()["runId"] == run_id
    assert kinds[-1] == terminal, kinds
    assert set(kinds[1:-1]) <= {"assistant.delta"}, kinds
    ids = [event.id for event in events]
    assert all(event_id is not None and event_id.isdigit() for event_id in ids), ids
    # Strictly increasing ids: every event carried an `id:` line of its own (a missing one would
    # repeat the previous id), and the order is the log's order.
    assert [int(event_id) for event_id in ids] == sorted({int(event_id) for event_id in ids}), ids
    for event in events:
        assert event.json()["type"] == event.event
        assert event.json()["runId"] == run_id
    assert events[-1].json()["turnSeq"] == assistant_turn_seq


# --- conversations -----------------------------------------------------------------------------------


async def test_create_get_and_list_conversations_with_pagination(fast_server):
    user = fast_server.new_user()
    neighbour = fast_server.new_user(org_id=user.org_id, workspaces=user.workspaces)
    async with user.client() as client, neighbour.client() as other:
        response = await client.post("/v1/conversations", json={"workspaceId": user.workspace, "title": "Release planning"})
        assert response.status_code == 201, response.text
        created = response.json()
        assert set(created) == {"conversationId", "createdAt"}
        assert created["conversationId"].startswith("conv_")
        assert created["createdAt"].endswith("Z")

        got = await client.get(f"/v1/conversations/{created['conversationId']}")
        assert got.status_code == 200, got.text
        header = got.json()
        assert header["conversationId"] == created["conversationId"]
        assert header["workspaceId"] == user.workspace
        assert header["title"] == "Release planning"
        assert header["createdAt"] == created["createdAt"]

        mine = [created["conversationId"]]
        for index in range(4):
            mine.append(await create_conversation(client, user.workspace, title=f"c{index}"))
        # Someone else's conversation in the same org and workspace never shows up in my list.
        theirs = await create_conversation(other, user.workspace, title="not yours")

        seen: list[str] = []
        params: dict[str, object] = {"limit": 2}
        pages = 0
        while True:
            response = await client.get("/v1/conversations", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["conversations"]) <= 2
            seen += [conversation["conversationId"] for conversation in page["conversations"]]
            pages += 1
            if page["nextBefore"] is None:
                break
            assert page["nextBefore"] == page["conversations"][-1]["conversationId"]
            params = {"limit": 2, "before": page["nextBefore"]}
            assert pages < 10, "pagination does not terminate"
        assert pages == 3
        assert len(seen) == len(set(seen)), f"a conversation appeared on two pages: {seen}"
        assert set(seen) == set(mine)
        assert theirs not in seen
        assert seen == sorted(seen, reverse=True), "newest first"

        filtered = await client.get("/v1/conversations", params={"workspaceId": user.workspace, "limit": 100})
        assert filtered.status_code == 200
        assert {c["conversationId"] for c in filtered.json()["conversations"]} == set(mine)


async def test_the_owner_renames_a_conversation_and_every_read_shows_the_new_title(fast_server):
    user = fast_server.new_user()
    neighbour = fast_server.new_user(org_id=user.org_id, workspaces=user.workspaces)
    async with user.client() as client, neighbour.client() as other:
        conversation_id = await create_conversation(client, user.workspace, title="Draft")
        await client.get(f"/v1/conversations/{conversation_id}")  # the header is now cached by the API

        renamed = await client.patch(f"/v1/conversations/{conversation_id}", json={"title": "  Tide tables  "})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["title"] == "Tide tables"
        assert (await client.get(f"/v1/conversations/{conversation_id}")).json()["title"] == "Tide tables"
        listed = (await client.get("/v1/conversations", params={"workspaceId": user.workspace})).json()
        assert [c["title"] for c in listed["conversations"] if c["conversationId"] == conversation_id] == ["Tide tables"]

        untitled = await client.patch(f"/v1/conversations/{conversation_id}", json={"title": ""})
        assert untitled.status_code == 200 and untitled.json()["title"] is None

        theirs = await other.patch(f"/v1/conversations/{conversation_id}", json={"title": "mine now"})
        assert theirs.status_code == 404, theirs.text
        too_long = await client.patch(f"/v1/conversations/{conversation_id}", json={"title": "x" * 201})
        assert too_long.status_code == 400 and too_long.headers["content-type"].startswith("application/problem+json")
        assert (await client.get(f"/v1/conversations/{conversation_id}")).json()["title"] is None


async def test_stream_ids_number_the_runs_own_events_and_say_nothing_of_other_tenants(fast_server):
    user, stranger = fast_server.new_user(), fast_server.new_user()
    async with user.client() as client, stranger.client() as other:
        conversation_id = await create_conversation(client, user.workspace)
        accepted = await submit_turn(client, conversation_id, "count my events")
        before = await read_stream(client, accepted["runId"])
        # Another tenant's traffic lands on the same log in between.
        theirs = await create_conversation(other, stranger.workspace)
        await read_stream(other, (await submit_turn(other, theirs, "busy elsewhere"))["runId"])
        after = await read_stream(client, accepted["runId"])
    assert [int(event.id) for event in before] == list(range(1, len(before) + 1))
    assert [(event.id, event.event, event.data) for event in after] == [(e.id, e.event, e.data) for e in before]


# --- one turn, end to end ---------------------------------------------------------------------------


async def test_submit_turn_read_your_writes_stream_and_run(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        question = "Summarize the design tradeoffs of our caching layer."
        response = await client.post(
            f"/v1/conversations/{conversation_id}/turns",
            json={"input": [{"type": "text", "text": question}], "toolMode": "auto", "responseMode": "stream"},
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert set(accepted) == {"runId", "turnSeq", "streamUrl"}
        run_id, user_seq = accepted["runId"], accepted["turnSeq"]
        assert user_seq == 1
        assert accepted["streamUrl"] == f"/v1/runs/{run_id}/stream"

        # Read-your-writes: the very next read shows the acknowledged user turn.
        turns = await list_turns(client, conversation_id)
        user_turn = turn_by_seq(turns, 1)
        assert user_turn["role"] == "user"
        assert user_turn["state"] == "completed"
        assert user_turn["content"] == [{"type": "text", "text": question}]
        assert user_turn["parentTurnSeq"] is None
        assert user_turn["createdAt"].endswith("Z")

        events = await read_stream(client, run_id)
        assert_well_formed_stream(events, run_id=run_id, assistant_turn_seq=2, terminal="assistant.completed")
        assert events[0].json()["turnSeq"] == 2
        assert sum(event.event == "assistant.delta" for event in events) >= 1
        streamed = delta_text(events)

        turns = await list_turns(client, conversation_id)
        assert [turn["turnSeq"] for turn in turns] == [1, 2]
        answer = turn_by_seq(turns, 2)
        assert answer["role"] == "assistant"
        assert answer["state"] == "completed"
        assert answer["parentTurnSeq"] == 1
        assert answer["runId"] == run_id
        assert text_of_turn(answer) == streamed
        assert looks_like_scripted_answer_prefix(streamed, question)
        assert len(streamed.split()) == FAST_ANSWER_TOKENS

        run = await get_run(client, run_id)
        assert run["runId"] == run_id
        assert run["status"] == "completed"
        assert run["mode"] == "interactive"
        assert run["conversationId"] == conversation_id
        assert run["turnSeq"] == 2
        assert run["usage"]["outputTokens"] == FAST_ANSWER_TOKENS
        assert run["usage"]["promptTokens"] > 0
        assert run["finishedAt"] is not None
        completed = events[-1].json()
        assert completed["usage"]["outputTokens"] == FAST_ANSWER_TOKENS

        conversation = (await client.get(f"/v1/conversations/{conversation_id}")).json()
        assert conversation["latestTurnSeq"] == 2


async def test_multi_turn_sequence_parent_chain_and_prompt_dependent_answers(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        first_q, second_q = "what is a write ahead log", "how does compaction reclaim space"
        first = await submit_turn(client, conversation_id, first_q)
        assert first["turnSeq"] == 1
        await read_stream(client, first["runId"])
        second = await submit_turn(client, conversation_id, second_q)
        assert second["turnSeq"] == 3
        events = await read_stream(client, second["runId"])
        assert_well_formed_stream(events, run_id=second["runId"], assistant_turn_seq=4, terminal="assistant.completed")

        turns = await list_turns(client, conversation_id)
        assert [(t["turnSeq"], t["role"], t["parentTurnSeq"]) for t in turns] == [
            (1, "user", None),
            (2, "assistant", 1),
            (3, "user", 2),
            (4, "assistant", 3),
        ]
        first_answer, second_answer = text_of_turn(turns[1]), text_of_turn(turns[3])
        assert first_answer != second_answer
        assert looks_like_scripted_answer_prefix(first_answer, first_q)
        assert looks_like_scripted_answer_prefix(second_answer, second_q)
        assert delta_text(events) == second_answer

        # Paging through turns with afterSeq/limit walks the same history.
        page = (await client.get(f"/v1/conversations/{conversation_id}/turns", params={"afterSeq": 1, "limit": 2})).json()
        assert [t["turnSeq"] for t in page["turns"]] == [2, 3]
        assert page["nextAfterSeq"] == 3
        page = (await client.get(f"/v1/conversations/{conversation_id}/turns", params={"afterSeq": 3, "limit": 2})).json()
        assert [t["turnSeq"] for t in page["turns"]] == [4]
        assert page["nextAfterSeq"] is None


# --- idempotency and conflicts ------------------------------------------------------------------------


async def test_idempotency_key_same_body_returns_same_run_and_writes_one_turn(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        key = e2e.unique("turn")
        first = await submit_turn(client, conversation_id, "hello there", idempotency_key=key)
        retry = await submit_turn(client, conversation_id, "hello there", idempotency_key=key)
        assert (retry["runId"], retry["turnSeq"]) == (first["runId"], first["turnSeq"])
        await wait_for_run(client, first["runId"])
        # Still the same answer after the run finished (the window is 24 h, not "while in flight").
        late_retry = await submit_turn(client, conversation_id, "hello there", idempotency_key=key)
        assert (late_retry["runId"], late_retry["turnSeq"]) == (first["runId"], first["turnSeq"])

        turns = await list_turns(client, conversation_id)
        assert [(t["turnSeq"], t["role"]) for t in turns] == [(1, "user"), (2, "assistant")]

        # Same key, different body: 422, and nothing written.
        response = await client.post(
            f"/v1/conversations/{conversation_id}/turns",
            json={"input": [{"type": "text", "text": "a different question"}]},
            headers={"Idempotency-Key": key},
        )
        problem = assert_problem(response, 422)
        assert problem["idempotencyKey"] == key
        assert key in problem["detail"]
        assert await list_turns(client, conversation_id) == turns


async def test_concurrent_retries_with_one_idempotency_key_make_one_turn(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        key = e2e.unique("turn")
        results = await asyncio.gather(
            *(submit_turn(client, conversation_id, "retry storm", idempotency_key=key) for _ in range(5))
        )
        assert len({(r["runId"], r["turnSeq"]) for r in results}) == 1
        await wait_for_run(client, results[0]["runId"])
        turns = await list_turns(client, conversation_id)
        assert [t["role"] for t in turns] == ["user", "assistant"]


async def test_submit_while_a_run_is_active_is_409_naming_the_run(slow_server):
    user = slow_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        active = await submit_turn(client, conversation_id, "a long answer please")
        try:
            response = await client.post(
                f"/v1/conversations/{conversation_id}/turns", json={"input": [{"type": "text", "text": "and another"}]}
            )
            problem = assert_problem(response, 409)
            assert active["runId"] in problem["detail"]
            regenerate = await client.post(f"/v1/conversations/{conversation_id}/regenerate")
            assert active["runId"] in assert_problem(regenerate, 409)["detail"]
            turns = await list_turns(client, conversation_id)
            assert [(t["turnSeq"], t["role"]) for t in turns] == [(1, "user"), (2, "assistant")]
        finally:
            await client.post(f"/v1/runs/{active['runId']}/cancel")


# --- regenerate ------------------------------------------------------------------------------------------


async def test_regenerate_adds_a_sibling_answer_to_the_latest_user_turn(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        nothing_yet = await client.post(f"/v1/conversations/{conversation_id}/regenerate")
        assert_problem(nothing_yet, 409)

        first = await submit_turn(client, conversation_id, "name three sorting algorithms")
        await read_stream(client, first["runId"])
        original = text_of_turn(turn_by_seq(await list_turns(client, conversation_id), 2))

        response = await client.post(f"/v1/conversations/{conversation_id}/regenerate")
        assert response.status_code == 202, response.text
        regenerated = response.json()
        assert regenerated["turnSeq"] == 3
        assert regenerated["runId"] != first["runId"]
        assert regenerated["streamUrl"] == f"/v1/runs/{regenerated['runId']}/stream"
        events = await read_stream(client, regenerated["runId"])
        assert_well_formed_stream(events, run_id=regenerated["runId"], assistant_turn_seq=3, terminal="assistant.completed")

        turns = await list_turns(client, conversation_id)
        assert [(t["turnSeq"], t["role"], t["parentTurnSeq"], t["state"]) for t in turns] == [
            (1, "user", None, "completed"),
            (2, "assistant", 1, "completed"),
            (3, "assistant", 1, "completed"),
        ]
        assert text_of_turn(turns[1]) == original, "the earlier answer stays as it was"
        assert text_of_turn(turns[2]) == delta_text(events)
        run = await get_run(client, regenerated["runId"])
        assert (run["status"], run["turnSeq"]) == ("completed", 3)

        # The same Idempotency-Key on regenerate returns the same run; a new regenerate can run in background.
        key = e2e.unique("regen")
        again = await client.post(
            f"/v1/conversations/{conversation_id}/regenerate", json={"responseMode": "background"}, headers={"Idempotency-Key": key}
        )
        assert again.status_code == 202, again.text
        retried = await client.post(
            f"/v1/conversations/{conversation_id}/regenerate", json={"responseMode": "background"}, headers={"Idempotency-Key": key}
        )
        assert retried.status_code == 202, retried.text
        assert retried.json() == again.json()
        assert again.json()["turnSeq"] == 4
        background = await wait_for_run(client, again.json()["runId"])
        assert (background["status"], background["mode"]) == ("completed", "background")
        turns = await list_turns(client, conversation_id)
        assert [(t["turnSeq"], t["parentTurnSeq"]) for t in turns] == [(1, None), (2, 1), (3, 1), (4, 1)]

        # A following turn hangs off the newest answer.
        follow_up = await submit_turn(client, conversation_id, "which is fastest")
        assert follow_up["turnSeq"] == 5
        await read_stream(client, follow_up["runId"])
        turns = await list_turns(client, conversation_id)
        assert turn_by_seq(turns, 5)["parentTurnSeq"] == 4
        assert turn_by_seq(turns, 6)["parentTurnSeq"] == 5


# --- cancel ------------------------------------------------------------------------------------------------


async def test_cancel_mid_stream_keeps_partial_text(slow_server):
    user = slow_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        question = "tell me everything about consensus"
        accepted = await submit_turn(client, conversation_id, question)
        run_id = accepted["runId"]
        events = []
        async with asyncio.timeout(20):
            async with open_stream(client, run_id) as stream:
                async for event in stream:
                    events.append(event)
                    if sum(e.event == "assistant.delta" for e in events) == 2:
                        break
                cancel = await client.post(f"/v1/runs/{run_id}/cancel")
                assert cancel.status_code == 202, cancel.text
                assert cancel.json()["runId"] == run_id
                async for event in stream:
                    events.append(event)
        assert_well_formed_stream(events, run_id=run_id, assistant_turn_seq=2, terminal="run.cancelled")
        streamed = delta_text(events)

        run = await get_run(client, run_id)
        assert run["status"] == "cancelled"
        answer = turn_by_seq(await list_turns(client, conversation_id), 2)
        assert answer["state"] == "cancelled"
        partial = text_of_turn(answer)
        assert partial, "the partial answer was lost"
        assert partial == streamed, "the kept text is exactly what was streamed"
        assert looks_like_scripted_answer_prefix(partial, question)
        assert len(partial.split()) < 200, "cancel did not stop generation"
        assert run["usage"]["outputTokens"] < 200

        again = await client.post(f"/v1/runs/{run_id}/cancel")
        problem = assert_problem(again, 409)
        assert run_id in problem["detail"]

        # The conversation is free again.
        follow_up = await client.post(
            f"/v1/conversations/{conversation_id}/turns", json={"input": [{"type": "text", "text": "short one"}]}
        )
        assert follow_up.status_code == 202, follow_up.text
        await client.post(f"/v1/runs/{follow_up.json()['runId']}/cancel")


# --- resuming streams -----------------------------------------------------------------------------------


async def test_last_event_id_resumes_exactly_after_the_last_event_seen(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        accepted = await submit_turn(client, conversation_id, "stream me a long list of words")
        run_id = accepted["runId"]

        head = []
        async with open_stream(client, run_id) as stream:
            async for event in stream:
                head.append(event)
                if len(head) == 2:  # run.started and the first delta, then the client drops
                    break
        assert [e.event for e in head] == ["run.started", "assistant.delta"]

        tail = await read_stream(client, run_id, last_event_id=head[-1].id)
        assert tail, "nothing after the resume point"
        assert all(int(e.id) > int(head[-1].id) for e in tail)
        resumed = head + tail
        assert_well_formed_stream(resumed, run_id=run_id, assistant_turn_seq=2, terminal="assistant.completed")

        # A finished run replays in full, then the server closes the stream.
        replay = await read_stream(client, run_id, timeout_s=5)
        assert [(e.id, e.event, e.data) for e in replay] == [(e.id, e.event, e.data) for e in resumed]
        assert delta_text(replay) == text_of_turn(turn_by_seq(await list_turns(client, conversation_id), 2))

        # Resuming from the middle of a finished run gives exactly its suffix, by header or by query.
        middle = replay[len(replay) // 2]
        expected_suffix = [(e.id, e.data) for e in replay[len(replay) // 2 + 1 :]]
        suffix = await read_stream(client, run_id, last_event_id=middle.id, timeout_s=5)
        assert [(e.id, e.data) for e in suffix] == expected_suffix
        async with asyncio.timeout(5):
            async with client.stream("GET", f"/v1/runs/{run_id}/stream", params={"lastEventId": middle.id}) as response:
                assert response.status_code == 200
                by_query = [event async for event in e2e.iter_sse(response.aiter_lines())]
        assert [(e.id, e.data) for e in by_query] == expected_suffix


async def test_resume_after_the_terminal_event_closes_the_stream(fast_server):
    """A client that already saw the terminal event and reconnects must not hang forever."""
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        accepted = await submit_turn(client, conversation_id, "short")
        events = await read_stream(client, accepted["runId"])
        assert events[-1].event == "assistant.completed"
        # EventSource reconnects whenever the server closes the stream, sending the last id it saw.
        resumed = await read_stream(client, accepted["runId"], last_event_id=events[-1].id, timeout_s=5)
        assert resumed == []


async def test_closing_the_stream_does_not_stop_the_run(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        question = "keep going without me"
        accepted = await submit_turn(client, conversation_id, question)
        async with open_stream(client, accepted["runId"]) as stream:
            async for event in stream:
                if event.event == "assistant.delta":
                    break
        run = await wait_for_run(client, accepted["runId"])
        assert run["status"] == "completed"
        assert run["usage"]["outputTokens"] == FAST_ANSWER_TOKENS
        answer = text_of_turn(turn_by_seq(await list_turns(client, conversation_id), 2))
        assert len(answer.split()) == FAST_ANSWER_TOKENS
        assert looks_like_scripted_answer_prefix(answer, question)


# --- background mode -------------------------------------------------------------------------------------


async def test_background_run_completes_and_its_stream_replays_later(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        accepted = await submit_turn(client, conversation_id, "crunch this in the background", response_mode="background")
        run = await get_run(client, accepted["runId"])
        assert run["mode"] == "background"
        run = await wait_for_run(client, accepted["runId"])
        assert (run["status"], run["mode"]) == ("completed", "background")

        events = await read_stream(client, accepted["runId"], timeout_s=5)
        assert_well_formed_stream(events, run_id=accepted["runId"], assistant_turn_seq=2, terminal="assistant.completed")
        answer = turn_by_seq(await list_turns(client, conversation_id), 2)
        assert answer["state"] == "completed"
        assert delta_text(events) == text_of_turn(answer)
        # The result is on the run itself: no stream needed.
        assert run["result"]["turnSeq"] == 2 and run["result"]["content"] == answer["content"]


async def test_a_background_run_reports_progress_and_a_cancel_stops_its_generation(slow_server):
    user = slow_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        accepted = await submit_turn(client, conversation_id, "a long background job", response_mode="background")
        progress = []
        async with asyncio.timeout(20):
            while len(progress) < 2 or progress[-1]["characters"] == progress[0]["characters"]:
                run = await get_run(client, accepted["runId"])
                assert run["status"] == "in_progress" and "result" not in run
                progress.append(run["progress"])
                await asyncio.sleep(0.2)
        assert progress[-1]["deltas"] >= 1 and progress[-1]["toolCalls"] == 0

        cancelled = await client.post(f"/v1/runs/{accepted['runId']}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        run = await wait_for_run(client, accepted["runId"])
        assert run["status"] == "cancelled"
        # The engine stopped: the run's output ends well short of the 200 tokens it was asked for.
        assert 0 < run["usage"]["outputTokens"] < 200
        assert "progress" not in run


# --- single writer, content fidelity, cancel before the first token ---------------------------------------


async def test_concurrent_submits_without_a_key_accept_exactly_one(slow_server):
    """On the slow server: its run (~10 s) outlasts the racers, which a loaded machine spread over ~0.4 s, longer
    than the fast server's whole run (one CI run accepted a second turn after the first had finished)."""
    user = slow_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        responses = await asyncio.gather(
            *(
                client.post(
                    f"/v1/conversations/{conversation_id}/turns", json={"input": [{"type": "text", "text": f"racer {i}"}]}
                )
                for i in range(6)
            )
        )
        accepted = [r for r in responses if r.status_code == 202]
        try:
            assert len(accepted) == 1, [(r.status_code, r.text) for r in responses]
            for rejected in (r for r in responses if r.status_code != 202):
                assert accepted[0].json()["runId"] in assert_problem(rejected, 409)["detail"]
            turns = await list_turns(client, conversation_id)
            assert [(t["turnSeq"], t["role"]) for t in turns] == [(1, "user"), (2, "assistant")]
        finally:
            for response in accepted:
                await client.post(f"/v1/runs/{response.json()['runId']}/cancel")


async def test_unicode_and_multi_part_input_round_trip_exactly(fast_server):
    user = fast_server.new_user()
    parts = [
        {"type": "text", "text": "Grüße aus Köln 🚀 — \"quoted\" and 'single'"},
        {"type": "text", "text": "line one\nline two\r\n\ttabbed 日本語 <b>&amp;</b> \\ back"},
    ]
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace, title="Ünïcødé 🚀")
        assert (await client.get(f"/v1/conversations/{conversation_id}")).json()["title"] == "Ünïcødé 🚀"
        response = await client.post(f"/v1/conversations/{conversation_id}/turns", json={"input": parts})
        assert response.status_code == 202, response.text
        events = await read_stream(client, response.json()["runId"])
        turns = await list_turns(client, conversation_id)
        assert turns[0]["content"] == parts
        assert "🚀" in delta_text(events) or "日本語" in delta_text(events)
        assert text_of_turn(turns[1]) == delta_text(events)


async def test_a_turn_just_under_the_body_limit_is_accepted_and_kept_whole(fast_server):
    user = fast_server.new_user()
    parts = [{"type": "text", "text": f"{i} " + "z" * 29_000} for i in range(8)]  # ~232 KB of JSON
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        response = await client.post(f"/v1/conversations/{conversation_id}/turns", json={"input": parts})
        assert response.status_code == 202, response.text
        turns = await list_turns(client, conversation_id)
        assert turns[0]["content"] == parts
        run = await wait_for_run(client, response.json()["runId"])
        assert run["status"] == "completed"


async def test_cancel_right_after_acceptance_stops_the_run_promptly(slow_server):
    """A cancel that races the worker's claim must still stop generation (a full answer takes ~10 s)."""
    user = slow_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        accepted = await submit_turn(client, conversation_id, "never mind")
        cancel = await client.post(f"/v1/runs/{accepted['runId']}/cancel")
        deadline = asyncio.get_running_loop().time() + 30
        while cancel.status_code == 503 and asyncio.get_running_loop().time() < deadline:
            # A loaded fleet's read models may lag the log: the API says so with a 503 and Retry-After, as a client honours.
            await asyncio.sleep(cancel.json().get("retryAfter", 1))
            cancel = await client.post(f"/v1/runs/{accepted['runId']}/cancel")
        assert cancel.status_code == 202, cancel.text
        events = await read_stream(client, accepted["runId"], timeout_s=3)
        assert events[-1].event == "run.cancelled"
        run = await get_run(client, accepted["runId"])
        assert run["status"] == "cancelled"
        assert run["usage"]["outputTokens"] < 200
        answer = turn_by_seq(await list_turns(client, conversation_id), 2)
        assert answer["state"] == "cancelled"
        assert text_of_turn(answer) == delta_text(events)
