"""The export document on real read models (chDB): its shape against the OpenAPI document, whose data it holds, and
that it is written a page at a time; and background export jobs writing it into a real blob store in parts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from ulid import ULID

from api.auth import Principal
from api.context import ApiContext
from api.export_document import ExportRequest, export_pieces
from api.export_jobs import ExportJob, ExportJobs
from api.openapi import build_document
from events.blobs import DirectoryBlobStore
from kernel.errors import Conflict, NotFound, Unavailable
from projections.chdb import ChdbStore
from projections.read_models import ConversationRow, FileRow, FileStateRow, ReadModels, RunRow, Scope, TurnRow

T0 = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
ORG = "org_acme"
ADA = Scope(org_id=ORG, owner_id="ada", workspace_ids=("ws_a", "ws_b"))
BOB = Scope(org_id=ORG, owner_id="bob", workspace_ids=("ws_a",))


def conversation_id(index: int) -> str:
    return "conv_" + str(ULID.from_timestamp((T0 + timedelta(minutes=index)).timestamp()))


@dataclass(frozen=True, kw_only=True)
class Seeded:
    conversations: list[str]  # ada's, newest first


async def seed(read_models: ReadModels, *, conversations: int, turns: int) -> Seeded:
    """Ada: `conversations` in ws_a and ws_b, each with `turns` turns (every even one an answer by a run), two uploads;
    Bob, in ws_a too: a conversation and a shared file, which Ada's export must never hold."""
    conversation_rows, turn_rows, run_rows, files, states = [], [], [], [], []
    ids = []
    for index in range(conversations):
        owner = ADA
        workspace_id = ("ws_a", "ws_b")[index % 2]
        cid = conversation_id(index)
        ids.append(cid)
        conversation_rows.append(ConversationRow(
            org_id=ORG, workspace_id=workspace_id, owner_id=owner.owner_id, conversation_id=cid, title=f"chat {index}",
            created_at=T0, version=1,
        ))
        for seq in range(1, turns + 1):
            scope = {"org_id": ORG, "workspace_id": workspace_id, "owner_id": owner.owner_id, "conversation_id": cid}
            if seq % 2:
                turn_rows.append(TurnRow(
                    **scope, turn_seq=seq, role="user", state="completed", content=[{"type": "text", "text": f"q{seq} “ü” 😀"}],
                    parent_turn_seq=seq - 1 or None, created_at=T0, finished_at=T0, version=seq,
                ))
            else:
                run_id = f"run_{index}_{seq}"
                turn_rows.append(TurnRow(
                    **scope, turn_seq=seq, role="assistant", state="completed", content=[{"type": "text", "text": f"a{seq}"}],
                    parent_turn_seq=seq - 1, run_id=run_id, created_at=T0, finished_at=T0 + timedelta(seconds=1),
                    citations=[{"marker": 1, "sourceId": "file_ada1", "chunkId": "file_ada1:0", "title": "T", "location": "", "quote": "q"}],
                    sources=[{"marker": 1, "sourceId": "file_ada1", "chunkId": "file_ada1:0", "title": "T", "location": ""}],
                    tool_calls=[{"callId": "c1", "toolName": "file_search", "status": "completed", "attempts": 1, "durationMs": 3}],
                    version=seq,
                ))
                run_rows.append(RunRow(
                    **scope, run_id=run_id, turn_seq=seq, mode="interactive", status="completed", prompt_tokens=10,
                    output_tokens=seq, created_at=T0, finished_at=T0 + timedelta(seconds=1), version=seq,
                ))
    bobs = conversation_id(10_000)
    conversation_rows.append(ConversationRow(
        org_id=ORG, workspace_id="ws_a", owner_id="bob", conversation_id=bobs, title="bob's", created_at=T0, version=1,
    ))
    turn_rows.append(TurnRow(
        org_id=ORG, workspace_id="ws_a", owner_id="bob", conversation_id=bobs, turn_seq=1, role="user", state="completed",
        content=[{"type": "text", "text": "bob's secret"}], created_at=T0, version=1,
    ))
    for file_id, owner, workspace_id in (("file_ada1", "ada", "ws_a"), ("file_ada2", "ada", "ws_b"), ("file_bob1", "bob", "ws_a")):
        files.append(FileRow(
            org_id=ORG, workspace_id=workspace_id, owner_id=owner, file_id=file_id, acl="workspace", filename=f"{file_id}.md",
            media_type="text/markdown", size=12, digest="ab" * 32, created_at=T0, version=1,
        ))
        states.append(FileStateRow(org_id=ORG, file_id=file_id, state="indexed", chunks_total=1, chunks_indexed=1, version=2))
    await read_models.upsert(conversations=conversation_rows, turns=turn_rows, runs=run_rows, files=files, file_states=states)
    return Seeded(conversations=ids[::-1])


@pytest.fixture
async def read_models(tmp_path: Path) -> AsyncIterator[ReadModels]:
    store = ChdbStore(str(tmp_path / "sql"))
    read_models = ReadModels(store)
    await read_models.create_tables()
    try:
        yield read_models
    finally:
        await store.close()


def validator(component: str) -> jsonschema.Draft202012Validator:
    """The OpenAPI document's schema of `component` (GET /openapi.json describes the streamed document by it)."""
    document = build_document()
    return jsonschema.Draft202012Validator({"components": document["components"], "$ref": f"#/components/schemas/{component}"})


@pytest.fixture(scope="module")
def document_schema() -> jsonschema.Draft202012Validator:
    return validator("ExportDocument")


async def exported(read_models: ReadModels, scope: Scope, *, workspace_id: str | None = None, page_size: int = 100) -> dict:
    request = ExportRequest(scope=scope, workspace_id=workspace_id, exported_at=T0)
    return json.loads("".join([piece async for piece in export_pieces(read_models, request, page_size=page_size)]))


async def test_the_document_holds_the_users_own_data_and_matches_its_schema(read_models, document_schema) -> None:
    seeded = await seed(read_models, conversations=3, turns=5)
    document = await exported(read_models, ADA, page_size=2)  # pages of 2: every reader goes past its first page
    errors = list(document_schema.iter_errors(document))
    assert not errors, errors
    assert document["format"] == "turnlog-export/1" and document["exportedAt"] == "2026-05-20T12:00:00.000Z"
    assert document["user"] == {"userId": "ada", "orgId": ORG, "workspaceIds": ["ws_a", "ws_b"]}
    assert [conversation["conversationId"] for conversation in document["conversations"]] == seeded.conversations
    for conversation in document["conversations"]:
        turns = conversation["turns"]
        assert [turn["turnSeq"] for turn in turns] == [1, 2, 3, 4, 5]
        answer = turns[1]
        assert answer["run"]["runId"] == answer["runId"] and answer["run"]["usage"]["outputTokens"] == 2
        assert answer["finishedAt"] == "2026-05-20T12:00:01.000Z" and answer["citations"][0]["sourceId"] == "file_ada1"
        assert "run" not in turns[0] and turns[0]["content"][0]["text"] == "q1 “ü” 😀"
    assert [file["fileId"] for file in document["files"]] == ["file_ada2", "file_ada1"]  # bob's shared file is not ada's
    assert "bob" not in json.dumps(document)

    bobs = await exported(read_models, BOB)
    assert [conversation["title"] for conversation in bobs["conversations"]] == ["bob's"]
    assert [file["fileId"] for file in bobs["files"]] == ["file_bob1"]

    only_b = await exported(read_models, ADA, workspace_id="ws_b")
    assert {conversation["workspaceId"] for conversation in only_b["conversations"]} == {"ws_b"}
    assert [file["fileId"] for file in only_b["files"]] == ["file_ada2"]
    token_without_b = await exported(read_models, Scope(org_id=ORG, owner_id="ada", workspace_ids=("ws_a",)))
    assert {conversation["workspaceId"] for conversation in token_without_b["conversations"]} == {"ws_a"}

    nobody = await exported(read_models, Scope(org_id="org_other", owner_id="ada", workspace_ids=("ws_a", "ws_b")))
    assert nobody["conversations"] == [] and nobody["files"] == []
    assert not list(document_schema.iter_errors(nobody))


class CountingReads:
    """The read models, noting each read and how many rows it returned."""

    def __init__(self, read_models: ReadModels, trace: list[str]) -> None:
        self._read_models = read_models
        self.trace = trace
        self.largest = 0

    def __getattr__(self, name: str):
        method = getattr(self._read_models, name)

        async def read(*args, **kwargs):
            rows = await method(*args, **kwargs)
            self.largest = max(self.largest, len(rows))
            self.trace.append("read")
            return rows

        return read


async def test_the_document_is_written_a_page_at_a_time(read_models) -> None:
    await seed(read_models, conversations=2, turns=1_000)  # 2,000 turns
    trace: list[str] = []
    reads = CountingReads(read_models, trace)
    request = ExportRequest(scope=ADA, workspace_id=None, exported_at=T0)
    pieces = []
    async for piece in export_pieces(reads, request, page_size=50):  # type: ignore[arg-type]
        trace.append("piece")
        pieces.append(piece)
    document = json.loads("".join(pieces))
    assert sum(len(conversation["turns"]) for conversation in document["conversations"]) == 2_000
    assert reads.largest <= 50
    # Never more than a page of turns and its runs read before the text they make is handed on.
    longest_run_of_reads = max(len(stretch) for stretch in "".join("r" if step == "read" else " " for step in trace).split())
    assert longest_run_of_reads <= 3, trace[:40]


# --- background jobs --------------------------------------------------------------------------------------


def principal(scope: Scope) -> Principal:
    return Principal(user_id=scope.owner_id, org_id=scope.org_id, workspace_ids=scope.workspace_ids)


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[DirectoryBlobStore]:
    store = DirectoryBlobStore(root=tmp_path / "blobs")
    await store.start()
    yield store
    await store.close()


def api_context(read_models: ReadModels, blobs: DirectoryBlobStore, *, caught_up=None) -> ApiContext:
    async def no_lag(**_: object) -> None:
        return None

    return ApiContext(
        bus=None, read_models=read_models, caught_up=caught_up or no_lag, log=None, codec=None,  # type: ignore[arg-type]
        secret=b"s" * 32, blobs=blobs,
    )


async def finished(jobs: ExportJobs, caller: Principal, export_id: str) -> dict:
    """The job once it has finished, as `GET /v1/exports/{id}` shows it (checked against its schema on the way)."""
    schema = validator("Export")
    async with asyncio.timeout(30):
        while (job := jobs.find(caller, export_id)).finished_at is None:
            assert not list(schema.iter_errors(job.json()))
            await asyncio.sleep(0.01)
    shown = job.json()
    errors = list(schema.iter_errors(shown))
    assert not errors, errors
    return shown


async def test_a_job_writes_the_document_in_parts_and_counts_its_progress(read_models, blobs) -> None:
    await seed(read_models, conversations=4, turns=6)
    jobs = ExportJobs(blobs=blobs, part_bytes=1_000)
    ada = principal(ADA)
    job = jobs.start(api_context(read_models, blobs), ada, workspace_id=None)
    assert job.json()["state"] in ("queued", "running") and job.json()["downloadUrl"] is None
    with pytest.raises(Conflict):  # one at a time per user
        jobs.start(api_context(read_models, blobs), ada, workspace_id=None)

    shown = await finished(jobs, ada, job.export_id)
    assert shown["state"] == "completed", shown
    assert shown["conversationsDone"] == shown["conversationsTotal"] == 4
    assert shown["downloadUrl"] == f"/v1/exports/{job.export_id}/download"
    assert len(job.parts) > 1 and shown["size"] == sum(part.size for part in job.parts)
    document = json.loads(b"".join([await blobs.get(part) for part in job.parts]))
    assert document == {**await exported(read_models, ADA), "exportedAt": document["exportedAt"]}

    for stranger in (principal(BOB), principal(Scope(org_id="org_other", owner_id="ada", workspace_ids=("ws_a", "ws_b")))):
        with pytest.raises(NotFound):
            jobs.find(stranger, job.export_id)
    with pytest.raises(NotFound):  # a token that no longer grants a workspace the export covers
        jobs.find(principal(Scope(org_id=ORG, owner_id="ada", workspace_ids=("ws_a",))), job.export_id)
    await jobs.close()


async def test_a_job_that_cannot_read_fails_with_its_reason_and_another_may_start(read_models, blobs) -> None:
    async def lagging(**_: object) -> None:
        raise Unavailable(detail="the read models are catching up with the log; retry shortly", retry_after_s=1)

    jobs = ExportJobs(blobs=blobs)
    ada = principal(ADA)
    job = jobs.start(api_context(read_models, blobs, caught_up=lagging), ada, workspace_id="ws_a")
    shown = await finished(jobs, ada, job.export_id)
    assert shown["state"] == "failed" and "catching up" in shown["failureReason"] and shown["downloadUrl"] is None
    again = jobs.start(api_context(read_models, blobs), ada, workspace_id="ws_a")
    assert (await finished(jobs, ada, again.export_id))["state"] == "completed"
    await jobs.close()


async def test_closing_stops_a_running_job(read_models, blobs) -> None:
    stuck = asyncio.Event()

    async def never(**_: object) -> None:
        await stuck.wait()

    jobs = ExportJobs(blobs=blobs)
    ada = principal(ADA)
    job = jobs.start(api_context(read_models, blobs, caught_up=never), ada, workspace_id=None)
    await asyncio.sleep(0)  # let it start waiting
    await jobs.close()
    shown = jobs.find(ada, job.export_id).json()
    assert shown["state"] == "failed" and "server stopped" in shown["failureReason"]


async def ended(job: ExportJob) -> None:
    async with asyncio.timeout(30):
        while job.finished_at is None:
            await asyncio.sleep(0.01)


async def test_a_forgotten_jobs_parts_leave_the_blob_store_and_closing_takes_the_rest(read_models, blobs) -> None:
    await seed(read_models, conversations=2, turns=2)
    jobs = ExportJobs(blobs=blobs, part_bytes=500, kept_for_s=0.0)  # forgotten as soon as anyone looks after it ends
    ada, bob = principal(ADA), principal(BOB)
    job = jobs.start(api_context(read_models, blobs), ada, workspace_id=None)
    await ended(job)
    parts = list(job.parts)
    assert job.state == "completed" and parts and all([await blobs.exists(part) for part in parts])

    # Bob's job starting forgets Ada's: its download is gone, and so are its parts.
    bobs = jobs.start(api_context(read_models, blobs), bob, workspace_id=None)
    with pytest.raises(NotFound):
        jobs.find(ada, job.export_id)
    async with asyncio.timeout(30):
        while any([await blobs.exists(part) for part in parts]):
            await asyncio.sleep(0.01)

    # A restart would leave nothing naming Bob's parts: the process deletes them as it stops.
    await ended(bobs)
    bobs_parts = list(bobs.parts)
    assert bobs_parts
    await jobs.close()
    assert not any([await blobs.exists(part) for part in bobs_parts])
