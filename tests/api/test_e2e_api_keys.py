"""API keys end to end, over real HTTP: an administrator creates a key (shown once), a program uses it as its bearer
token on turnlog's API and on the OpenAI-compatible facade, the listing never shows a secret, and once revoked the
key is a 401 everywhere. Keys made by `turnlog keys` on a stopped server's data dir are honoured when it starts.
"""

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI, AuthenticationError

import e2e_server as e2e
from turnlog import cli

MODEL = "interactive"
KEY_FIELDS = {
    "keyId", "name", "orgId", "userId", "workspaceIds", "role", "status", "createdBy", "createdAt", "expiresAt",
    "revokedAt", "revokedBy",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e.TurnlogServer]:
    server = e2e.TurnlogServer(data_dir=tmp_path_factory.mktemp("api_keys") / "data", answer_tokens=8)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keys_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """`turnlog keys ...`, in this process (as `tests/turnlog/test_credits_cli.py` runs `turnlog credits`)."""
    code = cli.main(["keys", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_a_key_is_created_used_listed_and_revoked(server) -> None:
    admin = server.new_user(role="admin", workspaces=[e2e.unique("ws"), e2e.unique("ws")])
    granted, withheld = admin.workspaces
    async with admin.client() as as_admin:
        response = await as_admin.post(
            "/v1/admin/api-keys", json={"name": "nightly report", "userId": "svc_reports", "workspaceIds": [granted]}
        )
        assert response.status_code == 201, response.text
        created = response.json()
        key = created["key"]
        assert key.startswith(f"tlk_{created['keyId']}_") and response.headers["location"] == f"/v1/admin/api-keys/{created['keyId']}"
        assert (created["userId"], created["orgId"], created["workspaceIds"], created["role"], created["status"]) == (
            "svc_reports", admin.org_id, [granted], "member", "active",
        )

        async with httpx.AsyncClient(base_url=server.base_url, headers=bearer(key), timeout=30) as program:
            conversation_id = await e2e.create_conversation(program, granted)
            accepted = await e2e.submit_turn(program, conversation_id, "hello from a program")
            events = await e2e.read_stream(program, accepted["runId"])
            assert events[-1].event == "assistant.completed"
            listed = await program.get("/v1/conversations", params={"workspaceId": granted})
            assert [c["conversationId"] for c in listed.json()["conversations"]] == [conversation_id]
            e2e.assert_problem(await program.post("/v1/conversations", json={"workspaceId": withheld}), 403)
            e2e.assert_problem(await program.get("/v1/admin/api-keys"), 403)  # a member key is no administrator

        openai = AsyncOpenAI(base_url=server.base_url + "/openai/v1", api_key=key, timeout=60, max_retries=0)
        completion = await openai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi there"}])
        assert e2e.looks_like_scripted_answer_prefix(completion.choices[0].message.content, "hi there")

        # The conversation is the key's user's, not the administrator's.
        listed = await as_admin.get("/v1/conversations", params={"workspaceId": granted})
        assert listed.json()["conversations"] == []

        listing = await as_admin.get("/v1/admin/api-keys")
        assert listing.status_code == 200
        [shown] = [item for item in listing.json()["apiKeys"] if item["keyId"] == created["keyId"]]
        assert set(shown) == KEY_FIELDS and shown["status"] == "active" and shown["name"] == "nightly report"
        assert key.split("_")[-1] not in listing.text  # the secret is never shown again
        one = await as_admin.get(f"/v1/admin/api-keys/{created['keyId']}")
        assert one.status_code == 200 and one.json() == shown

        stranger = server.new_user(role="admin")
        async with stranger.client() as as_stranger:
            assert created["keyId"] not in (await as_stranger.get("/v1/admin/api-keys")).text
            e2e.assert_problem(await as_stranger.delete(f"/v1/admin/api-keys/{created['keyId']}"), 404)

        revoked = await as_admin.request("DELETE", f"/v1/admin/api-keys/{created['keyId']}", json={"reason": "rotated"})
        assert revoked.status_code == 200, revoked.text
        assert (revoked.json()["status"], revoked.json()["revokedBy"]) == ("revoked", admin.user_id)
        again = await as_admin.delete(f"/v1/admin/api-keys/{created['keyId']}")
        assert again.status_code == 200 and again.json()["revokedAt"] == revoked.json()["revokedAt"]

    async with httpx.AsyncClient(base_url=server.base_url, headers=bearer(key), timeout=30) as program:
        refused = e2e.assert_problem(await program.get("/v1/conversations"), 401)
        assert "revoked" in refused["detail"]
        assert (await program.get("/v1/conversations")).headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(AuthenticationError):
        await openai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    await openai.close()


async def test_unknown_and_malformed_keys_are_401(server) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        unknown = "tlk_0123456789abcdef_" + "a" * 52
        assert "not valid" in e2e.assert_problem(await client.get("/v1/conversations", headers=bearer(unknown)), 401)["detail"]
        assert "malformed" in e2e.assert_problem(await client.get("/v1/conversations", headers=bearer("tlk_nope")), 401)["detail"]


async def test_members_cannot_manage_keys_and_bodies_are_checked(server) -> None:
    member = server.new_user()
    async with member.client() as client:
        e2e.assert_problem(await client.post("/v1/admin/api-keys", json={"workspaceIds": [member.workspace]}), 403)
    admin = server.new_user(role="admin")
    async with admin.client() as client:
        problem = e2e.assert_problem(await client.post("/v1/admin/api-keys", json={"workspaceIds": []}), 400)
        assert problem["errors"][0]["field"] == "workspaceIds"
        e2e.assert_problem(await client.delete("/v1/admin/api-keys/not-a-key"), 404)


def test_the_cli_creates_lists_and_revokes_keys_that_a_server_then_honours(tmp_path: Path, capsys, monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("TURNLOG_"):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    common = ("--data-dir", str(data_dir), "--by", "op_kim")
    made = [
        keys_cli(capsys, "create", *common, "--org-id", "org_cli", "--user-id", f"user_{n}", "--workspace-id", "ws_cli")
        for n in (1, 2)
    ]
    assert [(code, err) for code, _, err in made] == [(0, ""), (0, "")]
    first, second = (json.loads(out) for _, out, _ in made)
    assert first["key"].startswith(f"tlk_{first['keyId']}_") and first["createdBy"] == "op_kim"

    code, out, err = keys_cli(capsys, "revoke", *common, "--key-id", first["keyId"], "--reason", "test")
    assert (code, err) == (0, "") and json.loads(out)["status"] == "revoked"
    code, out, err = keys_cli(capsys, "list", *common, "--org-id", "org_cli")
    assert (code, err) == (0, "")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(row["keyId"], row["status"]) for row in rows] == [(second["keyId"], "active"), (first["keyId"], "revoked")]
    assert "key" not in rows[0] and first["key"].split("_")[-1] not in out

    server = e2e.TurnlogServer(data_dir=data_dir).start()
    try:
        code, _, err = keys_cli(capsys, "list", *common, "--org-id", "org_cli")
        assert code == 1 and "/v1/admin/api-keys" in err  # the embedded log is the running server's
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert client.get("/v1/conversations", headers=bearer(second["key"])).status_code == 200
            assert client.get("/v1/conversations", headers=bearer(first["key"])).status_code == 401
    finally:
        server.stop()
