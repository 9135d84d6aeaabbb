"""`file_search` as a tool the model calls, end to end: a real `turnlog serve --tools` over HTTP and SSE.

The tools file declares one MCP tool (the SDK's own server, over stdio) and says nothing of `file_search`:
with a tools file and a document search, the model is offered it anyway, in the caller's scope. The
scripted engine calls it from `call:file_search({...})` in the turn and answers with what it returned.
"""

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import e2e_server

pytestmark = pytest.mark.slow  # the first upload loads the embedding model

MCP_SERVER = Path(__file__).resolve().parents[1] / "processors" / "tools" / "mcp_test_server.py"
DEADLINE_S = 90.0  # a loaded two-core machine: the model loads, the index answers, the loop runs two steps
TIDES_MD = (
    b"# Tide notes\n\n"
    b"Spring tides follow the full moon by about two days.\n\n"
    b"## Harbour\n\nThe harbour gate closes two hours before low water.\n"
)
FOUND = "Spring tides follow the full moon by about two days."
TURN = 'call:file_search({"query": "How long after the full moon do spring tides come?"})'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e_server.TurnlogServer]:
    folder = tmp_path_factory.mktemp("file_search_tool")
    events = folder / "mcp-events.txt"
    events.touch()
    tools = folder / "tools.toml"
    tools.write_text(
        "[[servers]]\n"
        'name = "local"\ntransport = "stdio"\n'
        f"command = {json.dumps(sys.executable)}\n"
        f'args = [{json.dumps(str(MCP_SERVER))}, "stdio", "--events", {json.dumps(str(events))}]\n'
        '[[tools]]\nserver = "local"\nname = "add"\nidempotent = true\n'
    )
    # Room for the whole answer: the scripted engine repeats the tool's result word for word.
    turnlog = e2e_server.TurnlogServer(data_dir=folder / "data", answer_tokens=120, extra_args=("--tools", str(tools)))
    turnlog.start()
    try:
        yield turnlog
    finally:
        turnlog.stop()


async def asked(client: httpx.AsyncClient, workspace_id: str, text: str) -> tuple[list, dict]:
    """The run's stream, and its answer as the turns list has it."""
    conversation_id = await e2e_server.create_conversation(client, workspace_id)
    accepted = await e2e_server.submit_turn(client, conversation_id, text)
    events = await e2e_server.read_stream(client, accepted["runId"], timeout_s=DEADLINE_S)
    turns = await e2e_server.list_turns(client, conversation_id)
    return events, e2e_server.turn_by_seq(turns, accepted["turnSeq"] + 1)


def tool_events(events: list, kind: str) -> list[dict]:
    return [event.json() for event in events if event.event == kind]


async def test_the_model_searches_the_callers_documents_and_cites_what_it_found(server) -> None:
    owner, stranger = server.new_user(), server.new_user()  # the stranger is of another org
    async with owner.client() as owners, stranger.client() as strangers:
        file_id = await e2e_server.indexed_file(owners, owner.workspace, "tides.md", TIDES_MD)
        events, answer = await asked(owners, owner.workspace, TURN)
        their_events, their_answer = await asked(strangers, stranger.workspace, TURN)

    # Offered as a tool, file_search is the model's call alone: nothing was searched before it.
    assert [(call["callId"], call["toolName"]) for call in tool_events(events, "tool.call")] == [("call_1", "file_search")]
    [result] = tool_events(events, "tool.result")
    assert (result["callId"], result["toolName"], result["status"]) == ("call_1", "file_search", "completed")
    kinds = [event.event for event in events]
    assert kinds.index("tool.result") < kinds.index("assistant.delta") and kinds[-1] == "assistant.completed"
    text = e2e_server.delta_text(events)
    assert text.startswith(" file_search returned [1] Tide notes") and FOUND in text
    assert e2e_server.text_of_turn(answer) == text
    # The model cited [1], numbered run-wide by the tool loop: a citation of the uploaded file.
    assert file_id in {source["sourceId"] for source in answer["sources"]}
    cited = {citation["marker"]: citation for citation in answer["citations"]}
    assert cited[1]["sourceId"] == file_id and cited[1]["quote"] == FOUND

    # Another org asks the same: the search runs in its own scope and finds nothing of the first one's.
    assert [call["toolName"] for call in tool_events(their_events, "tool.call")] == ["file_search"]
    assert [result["status"] for result in tool_events(their_events, "tool.result")] == ["completed"]
    their_text = e2e_server.delta_text(their_events)
    assert "No passage of the user's documents matches this query." in their_text
    assert "Spring tides" not in their_text and "harbour" not in their_text.lower()
    assert their_answer["sources"] == [] and their_answer["citations"] == []
