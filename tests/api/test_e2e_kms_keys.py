"""End to end: `turnlog serve --keys kms:...` seals with data keys wrapped by a KMS key, and erases by destroying them.

A real server on the embedded defaults, its data keys made and unwrapped by a real `moto_server`'s KMS: a turn is
answered and read back, the key file on disk holds only the KMS's ciphertext, and an administrator's erasure
destroys the user's key (their token is refused from then on) while another user's conversation still reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import e2e_server
from e2e_server import assert_problem, create_conversation, list_turns, submit_turn, text_of_turn, unique, wait_for_run
from kernel.sealing import DATA_KEY_BYTES
from moto_aws import REGION, MotoServer


@pytest.fixture
def server(tmp_path: Path, moto_server: MotoServer) -> Iterator[e2e_server.TurnlogServer]:
    key_id = moto_server.client("kms").create_key(Description="turnlog e2e")["KeyMetadata"]["KeyId"]
    keys = f"kms:{key_id}?region={REGION}&endpoint={moto_server.endpoint_url}"
    server = e2e_server.TurnlogServer(data_dir=tmp_path / "data", extra_args=("--keys", keys)).start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_server_on_kms_wrapped_keys_seals_answers_and_erases(server) -> None:
    org_id, workspace = unique("org"), unique("ws")
    alice = server.new_user(org_id=org_id, workspaces=[workspace])
    bob = server.new_user(org_id=org_id, workspaces=[workspace])
    admin = server.new_user(org_id=org_id, workspaces=[workspace], role="admin")
    async with alice.client() as as_alice, bob.client() as as_bob, admin.client() as as_admin:
        conversations = {}
        for name, client in (("alice", as_alice), ("bob", as_bob)):
            conversation = await create_conversation(client, workspace)
            await wait_for_run(client, (await submit_turn(client, conversation, f"{name} asks about lighthouses"))["runId"])
            assert f"{name} asks about lighthouses" in "".join(text_of_turn(turn) for turn in await list_turns(client, conversation))
            conversations[name] = conversation

        key_files = [path for path in (server.data_dir / "keys").rglob("*.key")]
        assert key_files and all(path.stat().st_size > DATA_KEY_BYTES for path in key_files)  # KMS ciphertext only

        response = await as_admin.post("/v1/admin/erasures", json={"userId": alice.user_id})
        assert response.status_code == 202, response.text
        assert response.json()["keysDestroyed"] == 1
        assert_problem(await as_alice.get("/v1/conversations"), 403)
        assert "bob asks about lighthouses" in "".join(text_of_turn(turn) for turn in await list_turns(as_bob, conversations["bob"]))
