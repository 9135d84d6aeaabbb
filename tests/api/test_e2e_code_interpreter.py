"""`code_interpreter` end to end: a real `turnlog serve --tools` over HTTP and SSE, running the model's code in
its sandbox (bubblewrap, rlimits, seccomp), for the org the tools file enables and for no other. With a tiers file
too, so an escape attempt the sandbox kills is reported to governance and suspends its user.
"""

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

import e2e_server

DEADLINE_S = 90.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e_server.TurnlogServer]:
    folder = tmp_path_factory.mktemp("code_interpreter")
    tools = folder / "tools.toml"
    tools.write_text(
        '[[tools]]\nserver = "builtin"\nname = "code_interpreter"\norgs = ["org_code"]\n\n'
        "[code_interpreter]\nwall_s = 20\n\n[code_interpreter.orgs.org_code]\nmemory_mib = 256\n"
    )
    tiers = folder / "tiers.toml"
    # Postpaid and unlimited; one sandbox_escape (10 points) suspends.
    tiers.write_text("[tiers.free]\ncredits = false\n\n[abuse]\nthreshold = 10\nsuspension_s = 600\n")
    turnlog = e2e_server.TurnlogServer(
        data_dir=folder / "data", answer_tokens=200, extra_args=("--tools", str(tools), "--tiers", str(tiers))
    )
    turnlog.start()
    try:
        yield turnlog
    finally:
        turnlog.stop()


def call(code: str) -> str:
    """The scripted engine's trigger; its arguments end at a `)` before a space or a stop, so the code avoids both."""
    return f"call:code_interpreter({json.dumps({'code': code})})"


async def asked(user: e2e_server.User, text: str) -> tuple[list, dict]:
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        accepted = await e2e_server.submit_turn(client, conversation_id, text)
        events = await e2e_server.read_stream(client, accepted["runId"], timeout_s=DEADLINE_S)
        turns = await e2e_server.list_turns(client, conversation_id)
    return events, e2e_server.turn_by_seq(turns, accepted["turnSeq"] + 1)


def results(events: list) -> list[dict]:
    return [event.json() for event in events if event.event == "tool.result"]


async def test_the_model_runs_code_and_answers_with_what_it_printed_and_wrote(server) -> None:
    code = "f = open('out.txt', 'w')\nf.write('hello')\nf.close()\nprint(6 * 7)"
    events, answer = await asked(server.new_user(org_id="org_code"), call(code))

    [result] = results(events)
    assert (result["toolName"], result["status"]) == ("code_interpreter", "completed")
    text = e2e_server.delta_text(events)
    assert "42" in text and "out.txt" in text and "sha256:" in text  # the written file, kept as a blob
    assert [(c["toolName"], c["status"]) for c in answer["toolCalls"]] == [("code_interpreter", "completed")]


async def test_an_escape_attempt_is_a_clean_result_and_the_server_lives_on(server) -> None:
    code = "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', %d))" % server.port
    events, _ = await asked(server.new_user(org_id="org_code"), call(code))

    [result] = results(events)
    assert result["status"] == "failed"
    text = e2e_server.delta_text(events)
    assert "PermissionError" in text and events[-1].event == "assistant.completed"
    again, _ = await asked(server.new_user(org_id="org_code"), call("print('still here')"))
    assert "still here" in e2e_server.delta_text(again)


async def test_a_call_only_an_escape_makes_is_killed_reported_and_suspends_its_user(server) -> None:
    user = server.new_user(org_id="org_code")
    admin = server.new_user(org_id="org_code", role="admin")
    events, _ = await asked(user, call("import ctypes\nlibc = ctypes.CDLL(None)\nlibc.ptrace(16,1,0,0)\nprint('attached')"))

    [result] = results(events)
    assert result["status"] == "failed"
    text = e2e_server.delta_text(events)
    assert "killed: it made a system call the sandbox forbids" in text and "attached" not in text
    async with admin.client() as as_admin, user.client() as client:
        deadline = time.monotonic() + DEADLINE_S
        while True:  # the report is decided a moment after the call ends
            usage = (await as_admin.get("/v1/usage")).json()
            if user.user_id in [entry["userId"] for entry in usage["suspendedUsers"]]:
                break
            assert time.monotonic() < deadline, usage
            await asyncio.sleep(0.05)
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        refused = await client.post(
            f"/v1/conversations/{conversation_id}/turns", json={"input": e2e_server.text_input("print(1)")}
        )
    assert e2e_server.assert_problem(refused, 403)["suspendedUntil"]


async def test_an_org_the_tools_file_does_not_enable_is_not_offered_the_interpreter(server) -> None:
    events, _ = await asked(server.new_user(), call("print(6 * 7)"))

    # Not offered to this org: a call to it is refused by the loop and never runs.
    assert [r["status"] for r in results(events) if r["toolName"] == "code_interpreter"] in ([], ["not_allowed"])
    assert "42" not in e2e_server.delta_text(events)
