"""End to end over real HTTP: every error is problem+json, says what went wrong, and writes nothing.

Runs against the real `turnlog serve` processes of `tests/conftest.py`; each test has its own users.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

import e2e_server as e2e
from api.auth import issue_token, load_or_create_secret
from e2e_server import assert_problem, create_conversation, get_run, list_turns, read_stream, submit_turn

MAX_TURN_BODY_BYTES = 256 * 1024


async def conversation_with_one_answer(client: httpx.AsyncClient, workspace_id: str) -> tuple[str, str, list[dict]]:
    """A conversation holding one finished exchange: (conversation id, run id, its turns)."""
    conversation_id = await create_conversation(client, workspace_id)
    accepted = await submit_turn(client, conversation_id, "the original question")
    await read_stream(client, accepted["runId"])
    turns = await list_turns(client, conversation_id)
    assert [t["state"] for t in turns] == ["completed", "completed"]
    return conversation_id, accepted["runId"], turns


async def conversation_ids(client: httpx.AsyncClient) -> set[str]:
    response = await client.get("/v1/conversations", params={"limit": 100})
    assert response.status_code == 200, response.text
    return {c["conversationId"] for c in response.json()["conversations"]}


# --- authentication -------------------------------------------------------------------------------------


async def test_missing_and_invalid_tokens_are_401_problems(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id, run_id, _ = await conversation_with_one_answer(client, user.workspace)
    wrong_secret = issue_token(b"x" * 32, user_id=user.user_id, org_id=user.org_id, workspace_ids=user.workspaces)
    expired = issue_token(
        load_or_create_secret(fast_server.data_dir),
        user_id=user.user_id,
        org_id=user.org_id,
        workspace_ids=user.workspaces,
        ttl_s=60,
        issued_at=int(time.time()) - 3600,
    )
    credentials = {
        "no token": {},
        "garbage token": {"Authorization": "Bearer not-a-jwt"},
        "wrong scheme": {"Authorization": f"Basic {user.token}"},
        "forged signature": {"Authorization": f"Bearer {wrong_secret}"},
        "expired": {"Authorization": f"Bearer {expired}"},
    }
    requests = [
        ("POST", "/v1/conversations", {"workspaceId": user.workspace}),
        ("GET", "/v1/conversations", None),
        ("GET", f"/v1/conversations/{conversation_id}", None),
        ("GET", f"/v1/conversations/{conversation_id}/turns", None),
        ("POST", f"/v1/conversations/{conversation_id}/turns", {"input": [{"type": "text", "text": "hi"}]}),
        ("POST", f"/v1/conversations/{conversation_id}/regenerate", None),
        ("GET", f"/v1/runs/{run_id}", None),
        ("GET", f"/v1/runs/{run_id}/stream", None),
        ("POST", f"/v1/runs/{run_id}/cancel", None),
    ]
    async with httpx.AsyncClient(base_url=fast_server.base_url, timeout=10) as anonymous:
        for name, headers in credentials.items():
            for method, path, body in requests:
                response = await anonymous.request(method, path, headers=headers, json=body)
                problem = assert_problem(response, 401)
                assert response.headers["www-authenticate"].lower().startswith("bearer"), (name, method, path)
                assert problem["type"].endswith("/unauthenticated")
                assert problem["title"]
                assert "token" in problem["detail"].lower() or "authorization" in problem["detail"].lower(), problem
    async with user.client() as client:
        assert await conversation_ids(client) == {conversation_id}
        assert len(await list_turns(client, conversation_id)) == 2


# --- isolation ------------------------------------------------------------------------------------------


async def assert_invisible(stranger: httpx.AsyncClient, conversation_id: str, run_id: str) -> None:
    """Every way to reach someone else's conversation or run answers 404, like an id that never existed."""
    attempts = [
        ("GET", f"/v1/conversations/{conversation_id}", None),
        ("GET", f"/v1/conversations/{conversation_id}/turns", None),
        ("POST", f"/v1/conversations/{conversation_id}/turns", {"input": [{"type": "text", "text": "let me in"}]}),
        ("POST", f"/v1/conversations/{conversation_id}/regenerate", None),
        ("GET", f"/v1/runs/{run_id}", None),
        ("GET", f"/v1/runs/{run_id}/stream", None),
        ("POST", f"/v1/runs/{run_id}/cancel", None),
    ]
    for method, path, body in attempts:
        response = await stranger.request(method, path, json=body)
        problem = assert_problem(response, 404)
        assert problem["type"].endswith("/not-found"), (method, path, problem)
        # Indistinguishable from an id that does not exist at all.
        missing_path = path.replace(conversation_id, "conv_00000000000000000000000000").replace(
            run_id, "run_00000000000000000000000000"
        )
        missing = await stranger.request(method, missing_path, json=body)
        assert missing.status_code == 404, (method, missing_path, missing.text)
        assert missing.json()["title"] == problem["title"]
    listed = await stranger.get("/v1/conversations", params={"limit": 100})
    assert conversation_id not in {c["conversationId"] for c in listed.json()["conversations"]}


async def test_another_orgs_conversation_and_run_are_404_and_untouched(slow_server):
    owner = slow_server.new_user()
    # Even with the same user id and workspace names, a different org is a different tenant.
    stranger = slow_server.new_user(user_id=owner.user_id, workspaces=owner.workspaces)
    async with owner.client() as client, stranger.client() as other:
        conversation_id = await create_conversation(client, owner.workspace)
        accepted = await submit_turn(client, conversation_id, "an answer that takes a while")
        run_id = accepted["runId"]
        try:
            await assert_invisible(other, conversation_id, run_id)
            # The stranger's cancel did not cancel, their turn did not land.
            assert (await get_run(client, run_id))["status"] == "in_progress"
            turns = await list_turns(client, conversation_id)
            assert [(t["turnSeq"], t["role"]) for t in turns] == [(1, "user"), (2, "assistant")]
        finally:
            await client.post(f"/v1/runs/{run_id}/cancel")


async def test_same_org_other_user_gets_404(fast_server):
    owner = fast_server.new_user()
    colleague = fast_server.new_user(org_id=owner.org_id, workspaces=owner.workspaces)
    async with owner.client() as client, colleague.client() as other:
        conversation_id, run_id, turns = await conversation_with_one_answer(client, owner.workspace)
        await assert_invisible(other, conversation_id, run_id)
        assert await list_turns(client, conversation_id) == turns
        assert (await get_run(client, run_id))["status"] == "completed"


async def test_same_user_with_a_token_lacking_the_workspace_gets_404(fast_server):
    owner = fast_server.new_user(workspaces=[e2e.unique("ws"), e2e.unique("ws")])
    async with owner.client() as client:
        conversation_id, run_id, turns = await conversation_with_one_answer(client, owner.workspaces[1])
    narrower = fast_server.token(user_id=owner.user_id, org_id=owner.org_id, workspace_ids=owner.workspaces[:1])
    async with httpx.AsyncClient(
        base_url=fast_server.base_url, headers={"Authorization": f"Bearer {narrower}"}, timeout=10
    ) as other:
        await assert_invisible(other, conversation_id, run_id)


async def test_workspace_outside_the_token_is_403_and_creates_nothing(fast_server):
    user = fast_server.new_user()
    elsewhere = e2e.unique("ws")
    async with user.client() as client:
        before = await conversation_ids(client)
        create = await client.post("/v1/conversations", json={"workspaceId": elsewhere, "title": "sneaky"})
        problem = assert_problem(create, 403)
        assert elsewhere in problem["detail"]
        listing = await client.get("/v1/conversations", params={"workspaceId": elsewhere})
        assert elsewhere in assert_problem(listing, 403)["detail"]
        assert await conversation_ids(client) == before
    # And the workspace owner (someone who may use it) sees nothing there either.
    insider = fast_server.new_user(org_id=user.org_id, workspaces=[elsewhere])
    async with insider.client() as client:
        response = await client.get("/v1/conversations", params={"workspaceId": elsewhere})
        assert response.status_code == 200
        assert response.json()["conversations"] == []


# --- request validation: 400/413/415, and nothing written ---------------------------------------------


BAD_TURN_BODIES = {
    "malformed JSON": (b'{"input": [{"type": "text", "text": "hi"}', "malformed JSON"),
    "trailing garbage": (b'{"input": [{"type": "text", "text": "hi"}]} trailing', "malformed JSON"),
    "not an object": (b'[{"type": "text", "text": "hi"}]', "JSON object"),
    "input is a string": (json.dumps({"input": "hi"}).encode(), "input"),
    "text is a number": (json.dumps({"input": [{"type": "text", "text": 42}]}).encode(), "input[0].text"),
    "responseMode wrong": (
        json.dumps({"input": [{"type": "text", "text": "hi"}], "responseMode": "carrier pigeon"}).encode(),
        "responseMode",
    ),
    "unknown field": (json.dumps({"input": [{"type": "text", "text": "hi"}], "temperature": 2}).encode(), "temperature"),
    "unknown part type": (json.dumps({"input": [{"type": "image", "text": "hi"}]}).encode(), "input[0].type"),
    "empty input": (json.dumps({"input": []}).encode(), "input"),
    "blank text": (json.dumps({"input": [{"type": "text", "text": "   "}]}).encode(), "input"),
    "empty text": (json.dumps({"input": [{"type": "text", "text": ""}]}).encode(), "input[0].text"),
    "missing input": (json.dumps({}).encode(), "input"),
    "empty body": (b"", "body"),
    "duplicate key": (b'{"input": [{"type": "text", "text": "a"}], "input": []}', "duplicate"),
}


@pytest.mark.parametrize("case", list(BAD_TURN_BODIES), ids=list(BAD_TURN_BODIES))
async def test_invalid_turn_bodies_are_400_and_write_nothing(fast_server, case):
    body, mentioned = BAD_TURN_BODIES[case]
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id, _, turns = await conversation_with_one_answer(client, user.workspace)
        response = await client.post(
            f"/v1/conversations/{conversation_id}/turns",
            content=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": e2e.unique("k")},
        )
        problem = assert_problem(response, 400)
        assert mentioned in problem["detail"], problem
        assert problem["type"].endswith("/invalid-request")
        if "errors" in problem:
            assert all(set(error) == {"field", "message"} for error in problem["errors"]), problem
        assert await list_turns(client, conversation_id) == turns


async def test_field_errors_name_each_bad_field(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        response = await client.post(
            f"/v1/conversations/{conversation_id}/turns",
            json={"input": [{"type": "text", "text": 1}], "toolMode": "always", "colour": "blue"},
        )
        problem = assert_problem(response, 400)
        fields = {error["field"]: error["message"] for error in problem["errors"]}
        assert fields["input[0].text"] == "must be a string"
        assert "toolMode" in fields
        assert fields["colour"] == "unknown field 'colour'"
        assert await list_turns(client, conversation_id) == []


BAD_CONVERSATION_BODIES = {
    "malformed JSON": b'{"workspaceId": ',
    "workspaceId is a number": json.dumps({"workspaceId": 7}).encode(),
    "unknown field": None,  # filled in per user (needs their workspace)
    "missing workspaceId": json.dumps({"title": "no workspace"}).encode(),
    "bad workspace id": json.dumps({"workspaceId": "ws/../../etc"}).encode(),
    "title too long": None,
    "empty body": b"",
}


@pytest.mark.parametrize("case", list(BAD_CONVERSATION_BODIES), ids=list(BAD_CONVERSATION_BODIES))
async def test_invalid_create_conversation_bodies_are_400_and_create_nothing(fast_server, case):
    user = fast_server.new_user()
    body = BAD_CONVERSATION_BODIES[case]
    if case == "unknown field":
        body = json.dumps({"workspaceId": user.workspace, "owner": "someone_else"}).encode()
    elif case == "title too long":
        body = json.dumps({"workspaceId": user.workspace, "title": "t" * 201}).encode()
    async with user.client() as client:
        response = await client.post("/v1/conversations", content=body, headers={"Content-Type": "application/json"})
        assert_problem(response, 400)
        assert await conversation_ids(client) == set()


async def test_oversized_turn_body_is_413_and_writes_nothing(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id, _, turns = await conversation_with_one_answer(client, user.workspace)
        huge = json.dumps({"input": [{"type": "text", "text": "x" * (MAX_TURN_BODY_BYTES + 1)}]}).encode()
        response = await client.post(
            f"/v1/conversations/{conversation_id}/turns", content=huge, headers={"Content-Type": "application/json"}
        )
        problem = assert_problem(response, 413)
        assert problem["maxBytes"] == MAX_TURN_BODY_BYTES
        assert str(MAX_TURN_BODY_BYTES) in problem["detail"]

        # Chunked, with no Content-Length to refuse up front: the cap holds while reading.
        async def chunks():
            yield b'{"input": [{"type": "text", "text": "'
            for _ in range(40):
                yield b"y" * 8192
            yield b'"}]}'

        response = await client.post(
            f"/v1/conversations/{conversation_id}/turns", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert_problem(response, 413)
        assert await list_turns(client, conversation_id) == turns


async def test_oversized_create_conversation_body_is_413_and_creates_nothing(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        body = json.dumps({"workspaceId": user.workspace, "title": "t" * (17 * 1024)}).encode()
        response = await client.post("/v1/conversations", content=body, headers={"Content-Type": "application/json"})
        assert assert_problem(response, 413)["maxBytes"] == 16 * 1024
        assert await conversation_ids(client) == set()


async def test_invalid_regenerate_body_is_400_and_writes_nothing(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id, _, turns = await conversation_with_one_answer(client, user.workspace)
        for body in ({"responseMode": "later"}, {"input": "no"}):
            response = await client.post(f"/v1/conversations/{conversation_id}/regenerate", json=body)
            assert_problem(response, 400)
        response = await client.post(
            f"/v1/conversations/{conversation_id}/regenerate", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert "malformed JSON" in assert_problem(response, 400)["detail"]
        assert await list_turns(client, conversation_id) == turns


async def test_a_text_part_over_the_length_limit_is_400(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        parts = [{"type": "text", "text": "x" * 32_001}]
        response = await client.post(f"/v1/conversations/{conversation_id}/turns", json={"input": parts})
        problem = assert_problem(response, 400)
        assert "input[0].text" in problem["detail"]
        assert await list_turns(client, conversation_id) == []


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", None]
)
async def test_wrong_content_type_is_415_and_writes_nothing(fast_server, content_type):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id, _, turns = await conversation_with_one_answer(client, user.workspace)
        body = json.dumps({"input": [{"type": "text", "text": "hi"}]}).encode()
        headers = {"Content-Type": content_type} if content_type else {}
        response = await client.post(f"/v1/conversations/{conversation_id}/turns", content=body, headers=headers)
        assert_problem(response, 415)
        create = await client.post(
            "/v1/conversations", content=json.dumps({"workspaceId": user.workspace}).encode(), headers=headers
        )
        assert_problem(create, 415)
        assert await list_turns(client, conversation_id) == turns
        assert await conversation_ids(client) == {conversation_id}


async def test_bad_idempotency_key_is_400(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        response = await client.post(
            f"/v1/conversations/{conversation_id}/turns",
            json={"input": [{"type": "text", "text": "hi"}]},
            headers={"Idempotency-Key": "k" * 256},
        )
        assert "Idempotency-Key" in assert_problem(response, 400)["detail"]
        assert await list_turns(client, conversation_id) == []


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"afterSeq": "-1"}, "afterSeq"),
        ({"afterSeq": "abc"}, "afterSeq"),
        ({"afterSeq": "1.5"}, "afterSeq"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
    ],
)
async def test_bad_turn_paging_parameters_are_400(fast_server, params, named):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        response = await client.get(f"/v1/conversations/{conversation_id}/turns", params=params)
        assert named in assert_problem(response, 400)["detail"]


async def test_bad_conversation_list_limit_is_400(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        for limit in ("0", "-3", "x", "1000"):
            response = await client.get("/v1/conversations", params={"limit": limit})
            assert "limit" in assert_problem(response, 400)["detail"]


# --- routing and streams -------------------------------------------------------------------------------


async def test_unknown_route_is_a_404_problem(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        for path in ("/v1/nope", "/v2/conversations", "/v1/conversations/x/turns/extra"):
            response = await client.get(path)
            problem = assert_problem(response, 404)
            assert path in problem["detail"]


async def test_wrong_method_is_a_405_problem(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        for method, path in (("DELETE", "/v1/conversations"), ("PUT", "/v1/runs/run_x/cancel"), ("POST", "/v1/runs/run_x")):
            response = await client.request(method, path)
            problem = assert_problem(response, 405)
            assert method in problem["detail"]
            assert response.headers.get("allow"), "a 405 must list the allowed methods"


@pytest.mark.parametrize("last_event_id", ["abc", "-1", "1.5", "9" * 20])
async def test_bad_last_event_id_is_400(fast_server, last_event_id):
    user = fast_server.new_user()
    async with user.client() as client:
        conversation_id = await create_conversation(client, user.workspace)
        accepted = await submit_turn(client, conversation_id, "hi")
        response = await client.get(f"/v1/runs/{accepted['runId']}/stream", headers={"Last-Event-ID": last_event_id})
        assert "Last-Event-ID" in assert_problem(response, 400)["detail"]
        response = await client.get(f"/v1/runs/{accepted['runId']}/stream", params={"lastEventId": last_event_id})
        assert_problem(response, 400)


async def test_cancel_of_a_finished_run_is_409(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        _, run_id, _ = await conversation_with_one_answer(client, user.workspace)
        problem = assert_problem(await client.post(f"/v1/runs/{run_id}/cancel"), 409)
        assert run_id in problem["detail"]
        assert (await get_run(client, run_id))["status"] == "completed"
