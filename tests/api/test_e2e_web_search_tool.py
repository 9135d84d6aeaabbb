"""`web_search` end to end: a real `turnlog serve --tools` over HTTP and SSE, searching a local SearXNG stand-in.

The tools file enables `web_search` for one org only, pointed at the local search service (SearXNG's JSON
API and the pages it finds, on loopback: allowed explicitly, as the SSRF guard wants). The scripted engine
calls it from `call:web_search({...})` and answers with what it returned, citing `[1]`.
"""

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import e2e_server

DEADLINE_S = 90.0
SERVICE_FILE = Path(__file__).resolve().parents[1] / "processors" / "tools" / "web" / "local_search_service.py"
TURN = 'call:web_search({"query": "why two tides a day", "max_results": 1})'


def _service_module():
    spec = importlib.util.spec_from_file_location("local_search_service_e2e", SERVICE_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e_server.TurnlogServer]:
    service = _service_module().LocalSearchService.start()
    folder = tmp_path_factory.mktemp("web_search_tool")
    tools = folder / "tools.toml"
    tools.write_text(
        '[[tools]]\nserver = "builtin"\nname = "web_search"\norgs = ["org_web"]\n\n'
        f"[web_search]\nsearxng_url = {json.dumps(service.base_url)}\nallow_hosts = [\"127.0.0.1\"]\n"
    )
    turnlog = e2e_server.TurnlogServer(data_dir=folder / "data", answer_tokens=200, extra_args=("--tools", str(tools)))
    turnlog.start()
    try:
        yield turnlog
    finally:
        turnlog.stop()
        service.stop()


async def asked(user: e2e_server.User, text: str) -> tuple[list, dict]:
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        accepted = await e2e_server.submit_turn(client, conversation_id, text)
        events = await e2e_server.read_stream(client, accepted["runId"], timeout_s=DEADLINE_S)
        turns = await e2e_server.list_turns(client, conversation_id)
    return events, e2e_server.turn_by_seq(turns, accepted["turnSeq"] + 1)


async def test_the_model_searches_the_web_and_cites_the_page_it_read(web) -> None:
    events, answer = await asked(web.new_user(org_id="org_web"), TURN)

    [call] = [event.json() for event in events if event.event == "tool.call"]
    [result] = [event.json() for event in events if event.event == "tool.result"]
    assert call["toolName"] == "web_search" and (result["status"], result["callId"]) == ("completed", call["callId"])
    text = e2e_server.delta_text(events)
    assert "web_search returned [1] Why the sea has two tides a day" in text and "gravity of the moon" in text
    [source] = answer["sources"]
    assert source["sourceId"].endswith("/pages/tides.html") and source["title"] == "Why the sea has two tides a day"
    [citation] = answer["citations"]
    assert citation["marker"] == 1 and citation["sourceId"] == source["sourceId"] and "moon" in citation["quote"]
    assert [(c["toolName"], c["status"]) for c in answer["toolCalls"]] == [("web_search", "completed")]


async def test_an_org_the_tools_file_does_not_enable_is_not_offered_web_search(web) -> None:
    events, answer = await asked(web.new_user(), TURN)

    statuses = {event.json()["toolName"]: event.json()["status"] for event in events if event.event == "tool.result"}
    assert statuses.get("web_search") in (None, "not_allowed")  # not offered: never run
    assert "gravity of the moon" not in e2e_server.delta_text(events) and answer["sources"] == []
