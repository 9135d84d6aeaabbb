"""End to end over real HTTP: answers grounded in uploaded files, with file_search on the stream and citations.

Runs on the embedded server and on the Kafka fleet (`fast_server`). The scripted engine answers
like an obedient model: from passage [1], cited, or saying the documents do not cover the question.
"""

from __future__ import annotations


import httpx
import pytest

from e2e_server import create_conversation, indexed_file, read_stream, text_input, text_of_turn, turn_by_seq, list_turns

pytestmark = pytest.mark.slow  # the first upload loads the embedding model

TIDES_MD = (
    b"# Tide notes\n\n"
    b"Spring tides follow the full moon by about two days.\n\n"
    b"## Harbour\n\nThe harbour gate closes two hours before low water.\n"
)


async def ask(client: httpx.AsyncClient, conversation_id: str, question: str, **body) -> tuple[list, dict]:
    response = await client.post(
        f"/v1/conversations/{conversation_id}/turns", json={"input": text_input(question), **body}
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    events = await read_stream(client, accepted["runId"], timeout_s=30)
    answer = turn_by_seq(await list_turns(client, conversation_id), accepted["turnSeq"] + 1)
    return events, answer


async def test_an_attached_file_is_searched_on_the_stream_and_cited_in_the_answer(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        file_id = await indexed_file(client, user.workspace, "tides.md", TIDES_MD)
        conversation_id = await create_conversation(client, user.workspace)
        events, answer = await ask(
            client, conversation_id, "How long after the full moon do spring tides come?", attachments=[file_id]
        )
        kinds = [event.event for event in events]
        assert kinds[0] == "run.started" and kinds[-1] == "assistant.completed"
        call, result = events[kinds.index("tool.call")].json(), events[kinds.index("tool.result")].json()
        assert call["toolName"] == "file_search" and result["callId"] == call["callId"] and result["status"] == "completed"
        assert kinds.index("tool.call") < kinds.index("tool.result") < kinds.index("assistant.delta")

        assert "Spring tides follow the full moon by about two days." in text_of_turn(answer)
        assert "[1]" in text_of_turn(answer)
        [citation] = answer["citations"]
        assert citation["sourceId"] == file_id and citation["chunkId"] and citation["marker"] == 1
        assert citation["title"] == "Tide notes" and citation["quote"] == "Spring tides follow the full moon by about two days."
        assert file_id in {source["sourceId"] for source in answer["sources"]}

        # A question the file does not answer: the answer says so, and cites nothing.
        _, unanswered = await ask(client, conversation_id, "What is the capital of Mongolia?", attachments=[file_id])
        assert "do not cover" in text_of_turn(unanswered) and unanswered["citations"] == []


async def test_a_workspace_search_never_cites_another_tenants_or_another_users_private_file(fast_server):
    owner = fast_server.new_user()
    colleague = fast_server.new_user(org_id=owner.org_id, workspaces=list(owner.workspaces))
    stranger = fast_server.new_user()
    secret = b"# Secret plan\n\nThe zeppelin launch is scheduled for the ninth of March at dawn.\n"
    async with owner.client() as owners, colleague.client() as colleagues, stranger.client() as strangers:
        await indexed_file(strangers, stranger.workspace, "plan.md", secret)  # another org
        await indexed_file(colleagues, colleague.workspace, "plan.md", secret, acl="owner")  # the colleague's own
        mine = await indexed_file(owners, owner.workspace, "tides.md", TIDES_MD)
        conversation_id = await create_conversation(owners, owner.workspace)
        events, answer = await ask(owners, conversation_id, "When is the zeppelin launch scheduled?")

    assert "tool.call" in [event.event for event in events]  # the workspace holds documents: it searched
    assert {source["sourceId"] for source in answer["sources"]} <= {mine}
    assert {citation["sourceId"] for citation in answer["citations"]} <= {mine}
    assert "zeppelin launch is scheduled" not in text_of_turn(answer)
