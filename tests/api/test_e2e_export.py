"""End to end over real HTTP: a user exports their data, streamed (`GET /v1/export`) or as a background job, and gets
exactly what the API's own endpoints show them: never a colleague's conversations or uploads, never a workspace
their token does not grant.

Runs on the embedded server and on the Kafka fleet (`fast_server`); the fleet's background job is asked of one API
instance, as docs/exports.md says a client must.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from e2e_server import User, assert_problem, create_conversation, submit_turn, unique, wait_for_run

JOB_TIMEOUT_S = 30.0
INGESTION_TIMEOUT_S = 60.0
# Markdown with no text: its ingestion fails at once ("no text found"), without loading the embedding model, so the
# file's metadata stops changing and can be compared exactly.
BLANK_MD = b"   \n\n"


@dataclass(frozen=True, kw_only=True)
class Data:
    owner: User
    colleague: User
    regenerated: str  # the owner's conversation in the first workspace, with a regenerated answer
    with_file: str  # the owner's conversation in the second workspace, beside their upload
    file_id: str
    colleagues: tuple[str, str]  # the colleague's conversation and shared file, in the owner's workspace


async def patiently(client: httpx.AsyncClient, method: str, url: str, **options) -> httpx.Response:
    """As a client honouring `503` + `Retry-After` (a projection catching up) would ask."""
    deadline = time.monotonic() + 15.0
    response = await client.request(method, url, **options)
    while response.status_code == 503 and time.monotonic() < deadline:
        await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 1.0))
        response = await client.request(method, url, **options)
    return response


async def answered_turn(client: httpx.AsyncClient, conversation_id: str, text: str) -> None:
    await wait_for_run(client, (await submit_turn(client, conversation_id, text))["runId"])


async def settled_upload(client: httpx.AsyncClient, workspace_id: str, filename: str, *, acl: str = "workspace") -> str:
    response = await client.post("/v1/files", files={"file": (filename, BLANK_MD)}, data={"workspaceId": workspace_id, "acl": acl})
    assert response.status_code == 201, response.text
    file_id = response.json()["fileId"]
    deadline = time.monotonic() + INGESTION_TIMEOUT_S
    while True:
        response = await patiently(client, "GET", f"/v1/files/{file_id}")
        assert response.status_code == 200, response.text
        if response.json()["ingestionState"] in ("indexed", "failed"):
            return file_id
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.05)


async def seeded(server) -> Data:
    owner = server.new_user(workspaces=[unique("ws"), unique("ws")])
    first_workspace, second_workspace = owner.workspaces
    colleague = server.new_user(org_id=owner.org_id, workspaces=[first_workspace, second_workspace])
    async with owner.client() as client, colleague.client() as colleagues:
        theirs = await create_conversation(colleagues, first_workspace, title="the colleague's")
        await answered_turn(colleagues, theirs, "the colleague's question")
        shared = await settled_upload(colleagues, first_workspace, "shared.md")  # the owner sees it, but it is not theirs

        regenerated = await create_conversation(client, first_workspace, title="regenerated")
        await answered_turn(client, regenerated, "why are there two tides a day")
        again = await client.post(f"/v1/conversations/{regenerated}/regenerate")
        assert again.status_code == 202, again.text
        await wait_for_run(client, again.json()["runId"])

        with_file = await create_conversation(client, second_workspace, title=None)
        file_id = await settled_upload(client, second_workspace, "notes.md", acl="owner")
        await answered_turn(client, with_file, "what do my notes say")
    return Data(
        owner=owner, colleague=colleague, regenerated=regenerated, with_file=with_file, file_id=file_id,
        colleagues=(theirs, shared),
    )


def without(shape: dict, *names: str) -> dict:
    return {name: value for name, value in shape.items() if name not in names}


async def exported(client: httpx.AsyncClient, **params: str) -> dict:
    """The streamed export, checked for what makes it a streamed download, parsed."""
    async with client.stream("GET", "/v1/export", params=params) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("application/json")
        assert "content-length" not in response.headers and response.headers["transfer-encoding"] == "chunked"
        assert response.headers["cache-control"] == "no-store"
        body = await response.aread()
    document = httpx.Response(200, content=body).json()
    disposition = response.headers["content-disposition"]
    user_id = document["user"]["userId"]
    assert disposition == f'attachment; filename="turnlog-export-{user_id}-{document["exportedAt"][:10]}.json"'
    return document


async def assert_as_the_api_shows_it(client: httpx.AsyncClient, document: dict) -> None:
    """Every conversation, turn, run and file of the export is what the API's GET endpoints answer, field for field."""
    listed = await patiently(client, "GET", "/v1/conversations", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    assert [without(conversation, "turns") for conversation in document["conversations"]] == listed.json()["conversations"]
    for conversation in document["conversations"]:
        turns = await patiently(client, "GET", f"/v1/conversations/{conversation['conversationId']}/turns", params={"limit": 100})
        assert [without(turn, "finishedAt", "run") for turn in conversation["turns"]] == turns.json()["turns"]
        for turn in conversation["turns"]:
            assert turn["finishedAt"] is not None
            if turn["role"] == "user":
                assert "run" not in turn
                continue
            run = (await patiently(client, "GET", f"/v1/runs/{turn['runId']}")).json()
            assert turn["run"] == {name: run[name] for name in turn["run"]}, (turn["run"], run)
            assert turn["run"]["finishedAt"] == turn["finishedAt"] and turn["run"]["status"] == turn["state"] == "completed"
    for file in document["files"]:
        shown = await patiently(client, "GET", f"/v1/files/{file['fileId']}")
        assert file == shown.json()


async def test_a_user_exports_exactly_their_own_data_streamed(fast_server) -> None:
    data = await seeded(fast_server)
    owner, colleague = data.owner, data.colleague
    async with owner.client() as client:
        document = await exported(client)
        assert document["format"] == "turnlog-export/1" and document["workspaceId"] is None
        assert document["user"] == {"userId": owner.user_id, "orgId": owner.org_id, "workspaceIds": list(owner.workspaces)}
        assert "not in this export" in document["fileContents"]
        assert [conversation["conversationId"] for conversation in document["conversations"]] == [data.with_file, data.regenerated]
        regenerated = document["conversations"][1]
        assert [(turn["turnSeq"], turn["role"], turn["parentTurnSeq"]) for turn in regenerated["turns"]] == [
            (1, "user", None), (2, "assistant", 1), (3, "assistant", 1),  # the regenerated answer: a sibling
        ]
        assert [file["fileId"] for file in document["files"]] == [data.file_id]
        assert document["files"][0]["ownerId"] == owner.user_id and document["files"][0]["ingestionState"] == "failed"
        await assert_as_the_api_shows_it(client, document)
        for theirs in data.colleagues:
            assert theirs not in str(document)

    # The colleague, in the same org and workspaces, exports theirs alone.
    async with colleague.client() as client:
        colleagues = await exported(client)
        assert [conversation["conversationId"] for conversation in colleagues["conversations"]] == [data.colleagues[0]]
        assert [file["fileId"] for file in colleagues["files"]] == [data.colleagues[1]]
        await assert_as_the_api_shows_it(client, colleagues)
        for mine in (data.regenerated, data.with_file, data.file_id, owner.user_id):
            assert mine not in str(colleagues)

    # The owner with a token that lacks the second workspace: nothing of it.
    first_workspace, second_workspace = owner.workspaces
    narrow = User(
        server=fast_server, user_id=owner.user_id, org_id=owner.org_id, workspaces=(first_workspace,),
        token=fast_server.token(user_id=owner.user_id, org_id=owner.org_id, workspace_ids=[first_workspace]),
    )
    async with narrow.client() as client:
        partial = await exported(client)
        assert [conversation["conversationId"] for conversation in partial["conversations"]] == [data.regenerated]
        assert partial["files"] == [] and data.with_file not in str(partial)
        assert_problem(await client.get("/v1/export", params={"workspaceId": second_workspace}), 403)
        assert_problem(await client.post("/v1/exports", json={"workspaceId": second_workspace}), 403)
    async with owner.client() as client:
        only_second = await exported(client, workspaceId=second_workspace)
        assert only_second["workspaceId"] == second_workspace
        assert [conversation["conversationId"] for conversation in only_second["conversations"]] == [data.with_file]
        assert [file["fileId"] for file in only_second["files"]] == [data.file_id]


async def test_a_background_export_reports_progress_and_downloads_the_same_document(fast_server) -> None:
    data = await seeded(fast_server)
    owner = data.owner
    # A job lives in the API instance that started it: a fleet's client asks that one.
    instance = fast_server.apis[0] if hasattr(fast_server, "apis") else fast_server
    async with owner.client(base_url=instance.base_url) as client:
        started = await client.post("/v1/exports")
        assert started.status_code == 202, started.text
        job = started.json()
        assert started.headers["location"] == f"/v1/exports/{job['exportId']}"
        assert job["state"] in ("queued", "running") and job["downloadUrl"] is None and job["conversationsDone"] == 0
        seen = []
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while job["state"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.02)
            response = await client.get(started.headers["location"])
            assert response.status_code == 200, response.text
            job = response.json()
            seen.append(job["conversationsDone"])
        assert job["state"] == "completed", job
        assert job["conversationsDone"] == job["conversationsTotal"] == 2 and seen == sorted(seen)
        assert job["finishedAt"] and job["downloadUrl"] == f"/v1/exports/{job['exportId']}/download"

        download = await client.get(job["downloadUrl"])
        assert download.status_code == 200, download.text
        assert int(download.headers["content-length"]) == job["size"] == len(download.content)
        assert download.headers["content-disposition"].startswith(f'attachment; filename="turnlog-export-{owner.user_id}-')
        document = download.json()
        streamed = await exported(client)
        assert document == {**streamed, "exportedAt": document["exportedAt"]}
        await assert_as_the_api_shows_it(client, document)

    # Nobody else learns anything of it: the colleague and a token without one of its workspaces get a 404.
    first_workspace = owner.workspaces[0]
    narrow = User(
        server=fast_server, user_id=owner.user_id, org_id=owner.org_id, workspaces=(first_workspace,),
        token=fast_server.token(user_id=owner.user_id, org_id=owner.org_id, workspace_ids=[first_workspace]),
    )
    for other in (data.colleague, narrow):
        async with other.client(base_url=instance.base_url) as client:
            assert_problem(await client.get(f"/v1/exports/{job['exportId']}"), 404)
            assert_problem(await client.get(f"/v1/exports/{job['exportId']}/download"), 404)
