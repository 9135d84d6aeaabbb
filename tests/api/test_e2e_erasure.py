"""End to end: content is sealed at rest, and erasing a user leaves nothing of theirs readable anywhere (docs/encryption.md).

One real `turnlog serve` on the embedded defaults, its own data directory. Alice and Bob, of one org, each
upload a file and ask about it; an administrator erases Alice over HTTP. Then her token is refused and no one
else can read anything of hers, the read models and the search index hold none of her rows and chunks, her
blob is gone, the raw log never held her words and its sealed events no longer open, and a `turnlog replay`
rebuilds the read models without her. Bob's conversations, file, chunks and grounded answers are untouched.
Last, `turnlog erase` erases Carol with the server stopped.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

import e2e_server
from e2e_server import assert_problem, create_conversation, eventually, list_turns, read_stream, text_input, text_of_turn, turn_by_seq, unique
from events.blobs import blob_key
from events.documents import FileUploaded
from events.key_files import KeyFileStore
from events.topics import DOCUMENTS
from kernel.envelope import Envelope
from kernel.sealing import Erased, blob_subject
from projections.ledger_erasure import LEDGER_ERASURE_GROUP, LEDGER_TABLES
from projections.read_models import ReadModels
from projections.search.embedded import EmbeddedSearchIndex
from turnlog.adapters import build_codec

pytestmark = pytest.mark.slow  # the first upload loads the embedding model

DEADLINE_S = 90.0
ALICE_WORDS = "aardvark marmalade"  # in her question, and so in the scripted answer that echoes it
ALICE_DOC = b"# Vault notes\n\nThe vault opens with the phrase zebra quartz lantern.\n"
ALICE_DOC_WORDS = b"zebra quartz lantern"
BOB_WORDS = "pelican harmonica"
BOB_DOC = b"# Tide notes\n\nSpring tides follow the full moon by about two days.\n"
CAROL_WORDS = "walrus trombone"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[e2e_server.TurnlogServer]:
    server = e2e_server.TurnlogServer(data_dir=tmp_path / "data", answer_tokens=40).start()
    try:
        yield server
    finally:
        server.stop()


async def answered(client: httpx.AsyncClient, method: str, url: str, **options) -> httpx.Response:
    """A request as a client honouring `503` + `Retry-After` makes it (a projection catching up)."""
    deadline = time.monotonic() + 30
    response = await client.request(method, url, **options)
    while response.status_code == 503 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        response = await client.request(method, url, **options)
    return response


async def indexed_file(client: httpx.AsyncClient, workspace_id: str, filename: str, data: bytes) -> str:
    response = await client.post("/v1/files", files={"file": (filename, data)}, data={"workspaceId": workspace_id, "acl": "owner"})
    assert response.status_code == 201, response.text
    file_id = response.json()["fileId"]

    async def indexed() -> bool:
        file = (await answered(client, "GET", f"/v1/files/{file_id}")).json()
        assert file["ingestionState"] != "failed", file
        return file["ingestionState"] == "indexed"

    await eventually(indexed, f"{filename} indexed")
    return file_id


async def grounded_answer(client: httpx.AsyncClient, conversation_id: str, question: str, file_id: str) -> dict:
    response = await client.post(
        f"/v1/conversations/{conversation_id}/turns", json={"input": text_input(question), "attachments": [file_id]}
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    await read_stream(client, accepted["runId"], timeout_s=60)
    return turn_by_seq(await list_turns(client, conversation_id), accepted["turnSeq"] + 1)


async def chunks_of(server: e2e_server.TurnlogServer, org_id: str, workspace_id: str, file_id: str) -> int:
    index = EmbeddedSearchIndex(directory=server.data_dir / "search")
    await index.start()
    try:
        return await index.count(org_id=org_id, workspace_id=workspace_id, file_id=file_id)
    finally:
        await index.close()


def sealed_blobs_of(data_dir: Path, user_id: str) -> int:
    """How many blobs in the store are sealed under the user's key (their header names it)."""
    paths = [path for path in (data_dir / "blobs" / "sha256").rglob("*") if path.is_file() and not path.name.startswith(".")]
    return sum(1 for path in paths if (subject := blob_subject(path.read_bytes())) is not None and subject.user_id == user_id)


def raw_log_bytes(data_dir: Path) -> bytes:
    """Every byte the embedded log holds on disk: the database and its write-ahead log."""
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("log.db*")) if path.is_file())


def log_envelopes(data_dir: Path) -> list[Envelope]:
    """Every message on the log, decoded with the data dir's keys as any turnlog process would."""
    codec = build_codec(KeyFileStore(root=data_dir / "keys"))
    with closing(sqlite3.connect(f"file:{data_dir / 'log.db'}?mode=ro", uri=True)) as log:
        rows = log.execute("SELECT value FROM records ORDER BY log_offset").fetchall()
    return [codec.decode(value) for (value,) in rows]


def turnlog(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "turnlog.cli", *arguments], cwd=e2e_server.REPO_ROOT, capture_output=True, text=True, timeout=300
    )


async def test_erasing_a_user_leaves_nothing_of_theirs_readable_while_others_are_untouched(server) -> None:
    org_id, workspace = unique("org"), unique("ws")
    alice = server.new_user(org_id=org_id, workspaces=[workspace])
    bob = server.new_user(org_id=org_id, workspaces=[workspace])
    carol = server.new_user(org_id=org_id, workspaces=[workspace])
    admin = server.new_user(org_id=org_id, workspaces=[workspace], role="admin")
    async with alice.client() as as_alice, bob.client() as as_bob, carol.client() as as_carol, admin.client() as as_admin:
        alice_file = await indexed_file(as_alice, workspace, "vault.md", ALICE_DOC)
        bob_file = await indexed_file(as_bob, workspace, "tides.md", BOB_DOC)
        alice_conversation = await create_conversation(as_alice, workspace, title="alice's vault")
        bob_conversation = await create_conversation(as_bob, workspace, title="bob's tides")
        carol_conversation = await create_conversation(as_carol, workspace, title="carol's notes")
        alice_answer = await grounded_answer(as_alice, alice_conversation, f"How does the vault open? {ALICE_WORDS}", alice_file)
        assert alice_answer["state"] == "completed" and text_of_turn(alice_answer)
        bob_answer = await grounded_answer(as_bob, bob_conversation, f"When do spring tides come? {BOB_WORDS}", bob_file)
        assert "full moon" in text_of_turn(bob_answer)
        await e2e_server.wait_for_run(as_carol, (await e2e_server.submit_turn(as_carol, carol_conversation, CAROL_WORDS))["runId"])
        # Alice and Bob each leave a background export's parts in the blob store (never named on the log).
        for client in (as_alice, as_bob):
            started = await client.post("/v1/exports", json={})
            assert started.status_code == 202, started.text

            async def export_completed(client=client, location=started.headers["location"]) -> bool:
                return (await client.get(location)).json()["state"] == "completed"

            await eventually(export_completed, "the export completes")
        assert sealed_blobs_of(server.data_dir, alice.user_id) >= 2  # her upload and her export's part
        bobs_sealed_blobs = sealed_blobs_of(server.data_dir, bob.user_id)

        # Sealed at rest: neither the log nor the blob store ever held anyone's words.
        on_disk = raw_log_bytes(server.data_dir)
        for words in (ALICE_WORDS.encode(), ALICE_DOC_WORDS, BOB_WORDS.encode(), b"full moon", CAROL_WORDS.encode(), b"alice's vault"):
            assert words not in on_disk
        blobs = [path.read_bytes() for path in (server.data_dir / "blobs").rglob("*") if path.is_file()]
        assert blobs and not any(ALICE_DOC_WORDS in blob or b"full moon" in blob for blob in blobs)
        digests = {
            envelope.payload.file_id: envelope.payload.digest
            for envelope in log_envelopes(server.data_dir) if isinstance(envelope.payload, FileUploaded)
        }
        assert (server.data_dir / "blobs" / blob_key(digests[alice_file])).is_file()

        # Only the org's administrators erase, only in their org, one subject at a time.
        assert_problem(await as_alice.post("/v1/admin/erasures", json={"userId": bob.user_id}), 403)
        assert_problem(await as_admin.post("/v1/admin/erasures", json={"orgId": unique("org")}), 404)
        assert_problem(await as_admin.post("/v1/admin/erasures", json={"userId": alice.user_id, "orgId": org_id}), 400)
        assert_problem(await as_admin.post("/v1/admin/erasures", json={}), 400)
        assert_problem(await as_admin.post("/v1/admin/erasures", json={"userId": admin.user_id}), 409)  # not oneself

        response = await as_admin.post("/v1/admin/erasures", json={"userId": alice.user_id})
        assert response.status_code == 202, response.text
        erasure = response.json()
        assert (erasure["orgId"], erasure["userId"], erasure["keysDestroyed"], erasure["files"]) == (
            org_id, alice.user_id, 1, 1
        )

        # The API: Alice's token is refused everywhere; and nobody else ever saw her data.
        for path in ("/v1/conversations", f"/v1/conversations/{alice_conversation}/turns", f"/v1/runs/{alice_answer['runId']}",
                     f"/v1/files/{alice_file}", "/v1/files", "/v1/export"):
            assert_problem(await as_alice.get(path), 403)
        upload = await as_alice.post("/v1/files", files={"file": ("again.md", ALICE_DOC)}, data={"workspaceId": workspace})
        assert_problem(upload, 403)
        assert_problem(await as_admin.get(f"/v1/files/{alice_file}"), 404)

        # The search index and the blob store.
        async def alices_chunks_gone() -> bool:
            return await chunks_of(server, org_id, workspace, alice_file) == 0

        await eventually(alices_chunks_gone, "Alice's chunks leave the search index")
        await eventually(
            lambda: asyncio.sleep(0, result=not (server.data_dir / "blobs" / blob_key(digests[alice_file])).exists()),
            "Alice's blob leaves the blob store",
        )
        await eventually(  # and every other blob sealed under her key: the export's parts
            lambda: asyncio.sleep(0, result=sealed_blobs_of(server.data_dir, alice.user_id) == 0),
            "every blob sealed under Alice's key leaves the blob store",
        )

        # The raw log: her events are still there (it is immutable) but none opens; everyone else's do.
        envelopes = log_envelopes(server.data_dir)
        alices = [envelope for envelope in envelopes if envelope.actor.user_id == alice.user_id]
        assert any(isinstance(envelope.payload, Erased) for envelope in alices)
        assert not any(ALICE_WORDS in repr(envelope.payload) or "zebra" in repr(envelope.payload) for envelope in envelopes)
        assert any(BOB_WORDS in repr(envelope.payload) for envelope in envelopes if envelope.actor.user_id == bob.user_id)

        # Bob: untouched, and his documents still ground his answers.
        assert await chunks_of(server, org_id, workspace, bob_file) > 0
        assert (server.data_dir / "blobs" / blob_key(digests[bob_file])).is_file()
        assert sealed_blobs_of(server.data_dir, bob.user_id) == bobs_sealed_blobs
        assert BOB_WORDS in "".join(text_of_turn(turn) for turn in await list_turns(as_bob, bob_conversation))
        # Listing files waits until the projector has read all of `documents`, the erasure included.
        assert [file["fileId"] for file in (await answered(as_bob, "GET", "/v1/files")).json()["files"]] == [bob_file]
        fresh = await create_conversation(as_bob, workspace)
        again = await grounded_answer(as_bob, fresh, "When do spring tides come?", bob_file)
        assert "full moon" in text_of_turn(again), again
        assert [citation["sourceId"] for citation in again["citations"]] == [bob_file]

        await eventually(lambda: asyncio.sleep(0, result=ledger_eraser_read_all(server.data_dir)), "the ledgers' eraser reads it")

    # The read models the live projector left: nothing of Alice's, Bob's all there. A rebuild from the log agrees.
    # The analysts' ledgers likewise (their usage and charges are not sealed: they are deleted, and a refold skips them).
    server.stop()
    live = await read_models_of(server.data_dir)
    assert not owned_rows(live, alice.user_id, alice_file) and owned_rows(live, bob.user_id, bob_file)
    ledgers = await ledger_owners(server.data_dir)
    assert alice.user_id not in ledgers and {bob.user_id, carol.user_id} <= ledgers
    replayed = turnlog("replay", "--data-dir", str(server.data_dir))
    assert replayed.returncode == 0, replayed.stderr
    assert await read_models_of(server.data_dir) == live
    assert await ledger_owners(server.data_dir) == ledgers

    # `turnlog erase` (server stopped): Carol, by an operator.
    erased = turnlog("erase", "--data-dir", str(server.data_dir), "--org-id", org_id, "--user-id", carol.user_id)
    assert erased.returncode == 0, erased.stderr
    assert '"keysDestroyed": 1' in erased.stdout
    assert turnlog("erase", "--data-dir", str(server.data_dir), "--org-id", org_id).returncode == 2  # an org by name only
    server.start()
    async with alice.client() as as_alice, bob.client() as as_bob, carol.client() as as_carol:
        assert_problem(await as_alice.get("/v1/conversations"), 403)
        assert_problem(await as_carol.get("/v1/conversations"), 403)
        bobs = (await answered(as_bob, "GET", "/v1/conversations")).json()["conversations"]
        assert {conversation["conversationId"] for conversation in bobs} == {bob_conversation, fresh}
        assert BOB_WORDS in "".join(text_of_turn(turn) for turn in await list_turns(as_bob, bob_conversation))
        assert (await answered(as_bob, "GET", "/v1/files")).status_code == 200  # the projector has read Carol's erasure
        await eventually(lambda: asyncio.sleep(0, result=ledger_eraser_read_all(server.data_dir)), "the ledgers' eraser reads it")
    server.stop()
    assert not owned_rows(await read_models_of(server.data_dir), carol.user_id, None)
    assert await ledger_owners(server.data_dir) == ledgers - {carol.user_id}
    assert not any(CAROL_WORDS in repr(envelope.payload) for envelope in log_envelopes(server.data_dir))


async def read_models_of(data_dir: Path) -> dict[str, list[dict]]:
    """The stopped server's read models, every row (chDB opened in this process)."""
    from projections.chdb import ChdbStore  # the embedded engine: loaded only here

    store = ChdbStore(str(data_dir / "read-models"))
    try:
        return await ReadModels(store).snapshot()
    finally:
        await store.close()


async def ledger_owners(data_dir: Path) -> set[str]:
    """The user ids with rows in any of the stopped server's ledger tables."""
    from projections.chdb import ChdbStore

    store = ChdbStore(str(data_dir / "read-models"))
    try:
        return {
            str(row["user_id"])
            for table in LEDGER_TABLES
            for row in await store.query(f"SELECT DISTINCT user_id FROM {table}")
        }
    finally:
        await store.close()


def ledger_eraser_read_all(data_dir: Path) -> bool:
    """Whether the ledgers' eraser has committed past the last record on `documents` (the log read as it runs)."""
    with closing(sqlite3.connect(f"file:{data_dir / 'log.db'}?mode=ro", uri=True)) as log:
        (end,) = log.execute("SELECT max(log_offset) FROM records WHERE topic = ?", (DOCUMENTS,)).fetchone()
        committed = log.execute(
            "SELECT log_offset FROM consumer_offsets WHERE group_id = ? AND topic = ?", (LEDGER_ERASURE_GROUP, DOCUMENTS)
        ).fetchone()
    return committed is not None and committed[0] >= end


def owned_rows(snapshot: dict[str, list[dict]], user_id: str, file_id: str | None) -> list[dict]:
    return [
        row for rows in snapshot.values() for row in rows
        if row.get("owner_id") == user_id or (file_id is not None and row.get("file_id") == file_id)
    ]
