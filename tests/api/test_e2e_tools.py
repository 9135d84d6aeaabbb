"""The tool loop end to end: a real `turnlog serve --tools` over HTTP and SSE, its tools on a real MCP server (stdio).

The scripted engine proposes calls from `call:name({...})` in the turn and answers from the results;
the MCP server is the SDK's own, run by turnlog as a child process.
"""

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import e2e_server

MCP_SERVER = Path(__file__).resolve().parents[1] / "processors" / "tools" / "mcp_test_server.py"
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def tools_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[e2e_server.TurnlogServer, Path]]:
    folder = tmp_path_factory.mktemp("tools")
    events = folder / "mcp-events.txt"
    events.touch()
    tools = folder / "tools.toml"
    tools.write_text(
        "[[servers]]\n"
        'name = "local"\ntransport = "stdio"\n'
        f"command = {json.dumps(sys.executable)}\n"
        f'args = [{json.dumps(str(MCP_SERVER))}, "stdio", "--events", {json.dumps(str(events))}]\n'
        '[[tools]]\nserver = "local"\nname = "add"\nidempotent = true\n'
        '[[tools]]\nserver = "local"\nname = "sleep"\ntimeout_s = 1\n'
        '[[tools]]\nserver = "local"\nname = "whoami"\nrequire_approval = true\n'
        '[[tools]]\nserver = "local"\nname = "pid"\nlong = true\n'
    )
    server = e2e_server.TurnlogServer(data_dir=folder / "data", extra_args=("--tools", str(tools)))
    server.start()
    try:
        yield server, events
    finally:
        server.stop()


async def answered(client, conversation_id: str, text: str) -> tuple[dict, list]:
    accepted = await e2e_server.submit_turn(client, conversation_id, text)
    return accepted, await e2e_server.read_stream(client, accepted["runId"], timeout_s=DEADLINE_S)


async def test_a_run_calls_two_tools_and_answers_from_their_results(tools_server) -> None:
    server, _ = tools_server
    user = server.new_user()
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        accepted, events = await answered(
            client, conversation_id, 'Sum these: call:add({"a": 2, "b": 3}) and call:add({"a": 5, "b": 8})'
        )
        run = await e2e_server.get_run(client, accepted["runId"])
        turns = await e2e_server.list_turns(client, conversation_id)

    kinds = [event.event for event in events]
    assert kinds[0] == "run.started" and kinds[-1] == "assistant.completed"
    calls = [event.json() for event in events if event.event == "tool.call"]
    results = [event.json() for event in events if event.event == "tool.result"]
    assert [(call["callId"], call["toolName"]) for call in calls] == [("call_1", "add"), ("call_2", "add")]
    assert {(result["callId"], result["status"]) for result in results} == {("call_1", "completed"), ("call_2", "completed")}
    assert kinds.index("tool.result") < kinds.index("assistant.delta")  # the answer comes after the tools
    answer = e2e_server.delta_text(events)
    assert "add returned 5" in answer and "add returned 13" in answer
    # One step proposed both calls: each event still has an id of its own, so a resume after the first call
    # gets the second (the ids count the run's own events: 1, 2, ...).
    assert [int(event.id) for event in events] == list(range(1, len(events) + 1))
    first_call = next(event for event in events if event.event == "tool.call")
    async with user.client() as client:
        resumed = await e2e_server.read_stream(client, accepted["runId"], last_event_id=first_call.id)
    assert [event.id for event in resumed] == [event.id for event in events[events.index(first_call) + 1:]]
    assert resumed[0].event == "tool.call" and resumed[0].json()["callId"] == "call_2"
    assistant_turn = e2e_server.turn_by_seq(turns, accepted["turnSeq"] + 1)
    assert e2e_server.text_of_turn(assistant_turn) == answer
    assert [(c["callId"], c["toolName"], c["status"], c["attempts"]) for c in assistant_turn["toolCalls"]] == [
        ("call_1", "add", "completed", 1), ("call_2", "add", "completed", 1),
    ]
    assert [(call["callId"], call["status"], call["attempts"]) for call in run["toolCalls"]] == [
        ("call_1", "completed", 1), ("call_2", "completed", 1),
    ]
    # The run's usage is both model steps' (the second prompt holds the first and more); the scripted
    # engine counts message words only, not the tools' definitions the budget made room for.
    assert run["route"]["toolTokens"] > 0
    assert run["usage"]["promptTokens"] > 2 * (run["route"]["promptTokens"] - run["route"]["toolTokens"])


async def test_a_call_past_its_timeout_is_cancelled_at_the_tool_and_the_model_is_told(tools_server) -> None:
    server, mcp_events = tools_server
    user = server.new_user()
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        _, events = await answered(client, conversation_id, 'call:sleep({"seconds": 30, "label": "slow-e2e"})')

    [result] = [event.json() for event in events if event.event == "tool.result"]
    assert result["status"] == "timed_out" and result["durationMs"] < 15_000
    assert "[timed out]" in e2e_server.delta_text(events) and events[-1].event == "assistant.completed"
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while "cancelled slow-e2e" not in mcp_events.read_text():  # the server saw the cancellation
        assert asyncio.get_running_loop().time() < deadline, mcp_events.read_text()
        await asyncio.sleep(0.1)
    assert "finished slow-e2e" not in mcp_events.read_text()


async def test_bad_calls_are_never_executed_and_the_model_gets_the_reason(tools_server) -> None:
    server, _ = tools_server
    user = server.new_user()
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        _, events = await answered(client, conversation_id, 'call:add({"a": "two"}) then call:rm_rf({})')

    statuses = {event.json()["callId"]: event.json()["status"] for event in events if event.event == "tool.result"}
    assert statuses == {"call_1": "invalid_arguments", "call_2": "not_allowed"}
    answer = e2e_server.delta_text(events)
    assert "[invalid arguments]" in answer and "[not allowed]" in answer


async def wait_for_call(client, run_id: str, status: str) -> dict:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while True:
        run = await e2e_server.get_run(client, run_id)
        waiting = [call for call in run.get("toolCalls", []) if call["status"] == status]
        if waiting:
            return waiting[0]
        assert asyncio.get_running_loop().time() < deadline, run
        await asyncio.sleep(0.05)


async def test_a_call_that_needs_approval_runs_once_its_owner_approves_and_nobody_else_may(tools_server) -> None:
    server, _ = tools_server
    owner, stranger = server.new_user(), server.new_user()
    async with owner.client() as client, stranger.client() as other:
        conversation_id = await e2e_server.create_conversation(client, owner.workspace)
        accepted = await e2e_server.submit_turn(client, conversation_id, "call:whoami({})")
        run_id = accepted["runId"]
        call = await wait_for_call(client, run_id, "awaiting_approval")
        approval = f"/v1/runs/{run_id}/tool-calls/{call['callId']}/approval"
        e2e_server.assert_problem(await other.post(approval, json={"approve": True}), 404)
        e2e_server.assert_problem(await client.post(approval, json={"approve": "yes"}), 400)
        response = await client.post(approval, json={"approve": True})
        assert response.status_code == 202, response.text
        e2e_server.assert_problem(await client.post(approval, json={"approve": False}), 409)
        events = await e2e_server.read_stream(client, run_id, timeout_s=DEADLINE_S)

    kinds = [event.event for event in events]
    assert "tool.approval_required" in kinds and kinds[-1] == "assistant.completed"
    [result] = [event.json() for event in events if event.event == "tool.result"]
    assert result["status"] == "completed"


async def test_a_declined_call_is_not_run(tools_server) -> None:
    server, _ = tools_server
    owner = server.new_user()
    async with owner.client() as client:
        conversation_id = await e2e_server.create_conversation(client, owner.workspace)
        accepted = await e2e_server.submit_turn(client, conversation_id, "call:whoami({})")
        call = await wait_for_call(client, accepted["runId"], "awaiting_approval")
        response = await client.post(
            f"/v1/runs/{accepted['runId']}/tool-calls/{call['callId']}/approval", json={"approve": False, "reason": "no"}
        )
        assert response.status_code == 202
        events = await e2e_server.read_stream(client, accepted["runId"], timeout_s=DEADLINE_S)

    [result] = [event.json() for event in events if event.event == "tool.result"]
    assert result["status"] == "declined" and "[declined] declined by the user: no" in e2e_server.delta_text(events)


async def test_cancelling_a_run_that_waits_on_a_tool_ends_it(tools_server) -> None:
    server, _ = tools_server
    owner = server.new_user()
    async with owner.client() as client:
        conversation_id = await e2e_server.create_conversation(client, owner.workspace)
        accepted = await e2e_server.submit_turn(client, conversation_id, "call:whoami({})")
        await wait_for_call(client, accepted["runId"], "awaiting_approval")
        response = await client.post(f"/v1/runs/{accepted['runId']}/cancel")
        assert response.status_code == 202
        run = await e2e_server.wait_for_run(client, accepted["runId"], timeout_s=DEADLINE_S)

    assert run["status"] == "cancelled"
    assert [call["status"] for call in run["toolCalls"]] == ["cancelled"]


async def test_a_stream_resumed_mid_loop_continues_where_it_stopped(tools_server) -> None:
    server, _ = tools_server
    user = server.new_user()
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        accepted = await e2e_server.submit_turn(client, conversation_id, 'call:add({"a": 20, "b": 22})')
        first: list = []
        async with asyncio.timeout(DEADLINE_S):
            async with e2e_server.open_stream(client, accepted["runId"]) as stream:
                async for event in stream:
                    first.append(event)
                    if event.event == "tool.call":
                        break  # the connection drops in the middle of the loop
        rest = await e2e_server.read_stream(client, accepted["runId"], last_event_id=first[-1].id, timeout_s=DEADLINE_S)
        whole = await e2e_server.read_stream(client, accepted["runId"], timeout_s=DEADLINE_S)

    assert [(event.id, event.event, event.data) for event in first + rest] == [
        (event.id, event.event, event.data) for event in whole
    ]
    assert "tool.result" in [event.event for event in rest] and rest[-1].event == "assistant.completed"
    assert "add returned 42" in e2e_server.delta_text(rest)


async def test_calls_beyond_the_runs_budget_are_not_run_and_the_model_still_answers(tools_server) -> None:
    server, _ = tools_server
    user = server.new_user()
    text = " ".join(f'call:add({{"a": {n}, "b": 1}})' for n in range(9))  # one more than the 8 a run may make
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        _, events = await answered(client, conversation_id, text)

    statuses = [event.json()["status"] for event in events if event.event == "tool.result"]
    assert sorted(statuses) == ["budget_exhausted"] + ["completed"] * 8
    assert events[-1].event == "assistant.completed"
    assert e2e_server.delta_text(events).startswith(" add returned 1.")  # answered from the results it got


async def test_a_turn_may_narrow_its_tools_but_never_widen_them(tools_server) -> None:
    server, _ = tools_server
    user = server.new_user()
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        narrowed = await e2e_server.submit_turn(
            client, conversation_id, 'call:add({"a": 1, "b": 1}) call:sleep({"seconds": 0})', tools=["add", "not_declared"]
        )
        narrowed_events = await e2e_server.read_stream(client, narrowed["runId"], timeout_s=DEADLINE_S)
        none = await e2e_server.submit_turn(client, conversation_id, 'call:add({"a": 2, "b": 2})', tools=[])
        none_events = await e2e_server.read_stream(client, none["runId"], timeout_s=DEADLINE_S)
        bad = await client.post(
            f"/v1/conversations/{conversation_id}/turns",
            json={"input": e2e_server.text_input("hi"), "tools": ["no spaces allowed"]},
        )

    statuses = {e.json()["callId"]: e.json()["status"] for e in narrowed_events if e.event == "tool.result"}
    assert statuses == {"call_1": "completed", "call_2": "not_allowed"}  # declared, but not in this turn's list
    answer = e2e_server.delta_text(narrowed_events)
    assert "add returned 2" in answer and "available: add)" in answer  # and `not_declared` was not conjured up
    # Narrowed to nothing: the model is offered no tool, so the trigger is plain text.
    assert not [e for e in none_events if e.event.startswith("tool.")]
    assert none_events[-1].event == "assistant.completed"
    problem = e2e_server.assert_problem(bad, 400)
    assert "tools[0]" in json.dumps(problem)


async def test_calling_a_long_tool_moves_the_run_to_the_background_and_the_stream_says_so(tools_server) -> None:
    server, _ = tools_server
    user = server.new_user()
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        accepted, events = await answered(client, conversation_id, "call:pid({})")
        run = await e2e_server.get_run(client, accepted["runId"])

    kinds = [event.event for event in events]
    assert kinds.index("tool.call") < kinds.index("run.backgrounded") < kinds.index("tool.result")
    [moved] = [event.json() for event in events if event.event == "run.backgrounded"]
    assert moved["reason"] == "pid is long work"
    assert kinds[-1] == "assistant.completed" and "pid returned" in e2e_server.delta_text(events)
    assert (run["status"], run["mode"], run["backgroundedReason"]) == ("completed", "background", "pid is long work")
