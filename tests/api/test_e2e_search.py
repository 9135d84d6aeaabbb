"""End to end over real HTTP: `POST /v1/search`, ranked passages within the same scope as a turn's search.

Runs on the embedded server and on the Kafka fleet (`fast_server`), with the real MiniLM model.
"""

from __future__ import annotations


import httpx
import pytest

from e2e_server import indexed_file

pytestmark = pytest.mark.slow  # the first upload loads the embedding model

SECRET = b"# Secret plan\n\nThe zeppelin launch is scheduled for the ninth of March at dawn.\n"
PROBLEM = "application/problem+json"
TIDES_MD = (
    b"# Tide notes\n\n"
    b"Spring tides follow the full moon by about two days.\n\n"
    b"## Harbour\n\nThe harbour gate closes two hours before low water.\n"
)


async def search(client: httpx.AsyncClient, **body) -> httpx.Response:
    # An API-only process (the Kafka fleet's) loads the embedding model on its first search: seconds, more under load.
    return await client.post("/v1/search", json=body, timeout=120)


async def test_a_search_returns_ranked_passages_and_says_whether_they_cover_the_query(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        file_id = await indexed_file(client, user.workspace, "tides.md", TIDES_MD)
        response = await search(client, workspaceId=user.workspace, query="When does the harbour gate close?")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["covered"] is True
        best = body["passages"][0]
        assert best["fileId"] == file_id and best["title"] == "Tide notes" and best["location"] == "Harbour"
        assert "harbour gate closes two hours before low water" in best["text"] and best["chunk"] >= 0
        assert [p["score"] for p in body["passages"]] == sorted((p["score"] for p in body["passages"]), reverse=True)

        unrelated = (await search(client, workspaceId=user.workspace, query="Who won the football world cup in 2014?")).json()
        assert unrelated["covered"] is False  # a turn would answer that the documents do not cover it

        limited = (await search(client, workspaceId=user.workspace, query="tides", limit=1)).json()
        assert len(limited["passages"]) == 1


async def test_the_same_bytes_twice_rank_the_same_every_time(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        first = await indexed_file(client, user.workspace, "tides.md", TIDES_MD)
        second = await indexed_file(client, user.workspace, "tides.md", TIDES_MD)
        rankings = []
        for _ in range(3):
            response = await search(client, workspaceId=user.workspace, query="spring tides after the full moon")
            rankings.append([(p["fileId"], p["chunkId"], p["score"]) for p in response.json()["passages"]])
        assert rankings[0] == rankings[1] == rankings[2]
        files = [file_id for file_id, _, _ in rankings[0]]
        assert set(files) == {first, second}
        assert files[:2] == sorted([first, second])  # a tie: the same title and chunk, ordered by file id


async def test_another_org_workspace_or_user_s_private_file_is_never_found(fast_server):
    owner = fast_server.new_user()
    colleague = fast_server.new_user(org_id=owner.org_id, workspaces=list(owner.workspaces))
    stranger = fast_server.new_user(workspaces=list(owner.workspaces))  # another org, the same workspace name
    elsewhere = fast_server.new_user(org_id=owner.org_id)  # the same org, another workspace
    async with owner.client() as owners, colleague.client() as colleagues, stranger.client() as strangers, \
            elsewhere.client() as others:
        foreign = await indexed_file(strangers, stranger.workspace, "plan.md", SECRET)
        private = await indexed_file(colleagues, colleague.workspace, "plan.md", SECRET, acl="owner")
        await indexed_file(others, elsewhere.workspace, "plan.md", SECRET)
        mine = await indexed_file(owners, owner.workspace, "tides.md", TIDES_MD)

        query = "When is the zeppelin launch scheduled?"
        found = (await search(owners, workspaceId=owner.workspace, query=query, limit=50)).json()["passages"]
        assert {p["fileId"] for p in found} <= {mine}
        assert all("zeppelin" not in p["text"] for p in found)
        # The colleague sees their own private file; the owner of the workspace does not.
        assert private in {p["fileId"] for p in (await search(colleagues, workspaceId=owner.workspace, query=query)).json()["passages"]}

        for file_id in (foreign, private):  # naming a file one cannot see is refused, as an attachment would be
            refused = await search(owners, workspaceId=owner.workspace, query=query, fileIds=[file_id])
            assert refused.status_code == 422 and refused.headers["content-type"].startswith(PROBLEM)
            assert refused.json()["errors"][0]["field"] == "fileIds[0]"

        denied = await search(owners, workspaceId=elsewhere.workspace, query=query)
        assert denied.status_code == 403 and denied.headers["content-type"].startswith(PROBLEM)


async def test_bad_input_is_a_problem_naming_the_field(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        for body, field in (
            ({"workspaceId": user.workspace}, "query"),
            ({"workspaceId": user.workspace, "query": "   "}, "query"),
            ({"workspaceId": user.workspace, "query": "tides", "limit": 0}, "limit"),
            ({"query": "tides"}, "workspaceId"),
        ):
            response = await search(client, **body)
            assert response.status_code == 400 and response.headers["content-type"].startswith(PROBLEM), body
            assert field in {error["field"] for error in response.json()["errors"]}, response.json()
