"""Rebuilding the search index from the log: the rebuilt index answers like the live one, and catches up on later records."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

import e2e_server
from events.blobs import DirectoryBlobStore
from events.catalog import EVENT_TYPES
from kernel.codec import AvroCodec
from events.documents import FileDeleted, FileUploaded
from events.embedded import EmbeddedLog
from kernel.envelope import Envelope, new_id
from kernel.log import LogRecord
from events.topics import DOCUMENTS
from kernel.envelope import Actor
from processors.ingestion.extraction.document import MediaType
from processors.ingestion.ingester import Ingester
from processors.ingestion.reindex import rebuild_search_index
from kernel.runtime import Delivery, encode
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.index import SearchScope

CODEC = AvroCodec(payload_types=EVENT_TYPES)
ADA = Actor(user_id="ada", org_id="org_acme", workspace_id="ws_research")
NOW = datetime(2026, 4, 25, 9, 30, tzinfo=UTC)
REPO_ROOT = Path(__file__).resolve().parents[3]

DOCUMENTS_TEXT = {
    "tides.md": "# Tides\n\nSpring tides follow the full moon by about two days. Neap tides come at the quarter moons.\n",
    "budget.md": "# Budget\n\nThe travel budget for the Lisbon offsite is twelve thousand euros, flights included.\n",
    "keeper.md": "# Keeper\n\nThe lighthouse keeper trims the wick at dusk and winds the clockwork every four hours.\n",
    "doomed.md": "# Doomed\n\nThis page about volcanoes will be deleted before the rebuild.\n",
}
QUESTIONS = (
    "When do spring tides happen?",
    "How much can we spend on the Lisbon trip?",
    "What does the keeper do at dusk?",
    "Tell me about volcanoes",
)


class Files:
    def __init__(self, log: EmbeddedLog, blobs: DirectoryBlobStore) -> None:
        self.log = log
        self.blobs = blobs

    async def upload(self, filename: str, text: str) -> tuple[FileUploaded, LogRecord]:
        ref = await self.blobs.put(text.encode())
        upload = FileUploaded(
            file_id=new_id("file"), workspace_id=ADA.workspace_id, owner_id=ADA.user_id, acl="workspace",
            filename=filename, media_type=MediaType.MARKDOWN.value, size=ref.size, digest=ref.digest, uploaded_at=NOW,
        )
        return upload, await self.append(upload)

    async def append(self, event) -> LogRecord:
        [record] = await self.log.append([encode(CODEC, Envelope.wrap(event, key=event.file_id, actor=ADA), topic=DOCUMENTS)])
        return record


@pytest.fixture
async def stores(tmp_path: Path, embedded_log: EmbeddedLog) -> AsyncIterator[tuple[Files, EmbeddedSearchIndex]]:
    blobs = DirectoryBlobStore(root=tmp_path / "blobs")
    index = EmbeddedSearchIndex(directory=tmp_path / "search")
    await blobs.start()
    await index.start()
    try:
        yield Files(embedded_log, blobs), index
    finally:
        await index.close()
        await blobs.close()


async def answers(index: EmbeddedSearchIndex, embedder, questions: Sequence[str]) -> list[list[tuple[str, str]]]:
    scope = SearchScope(org_id=ADA.org_id, workspace_id=ADA.workspace_id, user_id=ADA.user_id)
    vectors = await embedder.embed(list(questions))
    return [
        [(hit.chunk_id, hit.text) for hit in await index.search(scope, text=question, vector=vector, limit=3)]
        for question, vector in zip(questions, vectors)
    ]


async def test_the_rebuilt_index_answers_like_the_live_one(stores, embedded_log: EmbeddedLog, embedder, wordpiece) -> None:
    files, index = stores
    ingester = Ingester(log=embedded_log, codec=CODEC, blobs=files.blobs, index=index, embedder=embedder, tokenizer=wordpiece)
    records = [record for _, record in [await files.upload(name, text) for name, text in DOCUMENTS_TEXT.items()]]
    broken, broken_record = await files.upload("broken.md", "   ")  # fails ingestion, and is skipped by the rebuild
    await ingester.react([Delivery(record=record, envelope=CODEC.decode(record.value)) for record in [*records, broken_record]])
    doomed = CODEC.decode(records[-1].value).payload
    deletion = await files.append(FileDeleted(file_id=doomed.file_id, deleted_at=NOW))
    await ingester.react([Delivery(record=deletion, envelope=CODEC.decode(deletion.value))])
    live_answers = await answers(index, embedder, QUESTIONS)
    live_count = await index.count(org_id=ADA.org_id, workspace_id=ADA.workspace_id)
    generation = index.generation

    lines: list[str] = []
    report = await rebuild_search_index(
        log=embedded_log, codec=CODEC, blobs=files.blobs, index=index, embedder=embedder, tokenizer=wordpiece,
        progress=lines.append,
    )

    assert index.generation != generation
    assert (report.files, report.chunks, list(report.skipped)) == (3, live_count, [broken.file_id])
    assert await answers(index, embedder, QUESTIONS) == live_answers
    assert all(doomed.file_id not in chunk for hits in live_answers for chunk, _ in hits)
    assert lines[0] == "4 files to index" and any("skipped (no text found" in line for line in lines)


async def test_records_appended_during_the_rebuild_are_applied_after_the_switch(stores, embedded_log, embedder, wordpiece) -> None:
    files, index = stores
    ingester = Ingester(log=embedded_log, codec=CODEC, blobs=files.blobs, index=index, embedder=embedder, tokenizer=wordpiece)
    first, first_record = await files.upload("tides.md", DOCUMENTS_TEXT["tides.md"])
    await ingester.react([Delivery(record=first_record, envelope=CODEC.decode(first_record.value))])
    late: dict[str, FileUploaded] = {}

    class UploadsArriveMidway:
        """The real embedder; while the rebuild embeds, a file is uploaded and the first one deleted."""

        dimensions = embedder.dimensions

        async def embed(self, texts: Sequence[str]) -> np.ndarray:
            if not late:
                late["upload"], _ = await files.upload("keeper.md", DOCUMENTS_TEXT["keeper.md"])
                await files.append(FileDeleted(file_id=first.file_id, deleted_at=NOW))
            return await embedder.embed(texts)

    report = await rebuild_search_index(
        log=embedded_log, codec=CODEC, blobs=files.blobs, index=index, embedder=UploadsArriveMidway(), tokenizer=wordpiece
    )

    assert report.caught_up == 2
    assert await index.count(org_id=ADA.org_id, workspace_id=ADA.workspace_id, file_id=first.file_id) == 0
    assert await index.count(org_id=ADA.org_id, workspace_id=ADA.workspace_id, file_id=late["upload"].file_id) == 1


@pytest.mark.slow
async def test_turnlog_replay_rebuilds_the_search_index_of_a_stopped_server(tmp_path: Path, embedder) -> None:
    server = e2e_server.TurnlogServer(data_dir=tmp_path / "data").start()
    try:
        user = server.new_user()
        async with user.client() as client:
            for name, text in DOCUMENTS_TEXT.items():
                response = await client.post("/v1/files", files={"file": (name, text.encode())}, data={"workspaceId": user.workspace})
                assert response.status_code == 201, response.text
            file_ids = [file["fileId"] for file in (await client.get("/v1/files")).json()["files"]]
            async with asyncio.timeout(90):
                for file_id in file_ids:
                    while (await client.get(f"/v1/files/{file_id}")).json()["ingestionState"] != "indexed":
                        await asyncio.sleep(0.05)
    finally:
        server.stop()
    actor = Actor(user_id=user.user_id, org_id=user.org_id, workspace_id=user.workspace)

    async def search_answers() -> list[list[str]]:
        index = EmbeddedSearchIndex(directory=server.data_dir / "search")
        await index.start()
        try:
            scope = SearchScope(org_id=actor.org_id, workspace_id=actor.workspace_id, user_id=actor.user_id)
            vectors = await embedder.embed(list(QUESTIONS))
            return [[hit.chunk_id for hit in await index.search(scope, text=q, vector=v, limit=3)] for q, v in zip(QUESTIONS, vectors)]
        finally:
            await index.close()

    before = await search_answers()
    replayed = subprocess.run(
        [sys.executable, "-m", "turnlog.cli", "replay", "--projection", "search", "--data-dir", str(server.data_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "rebuilt the search index: 4 files" in replayed.stdout
    assert "[4/4]" in replayed.stdout
    assert await search_answers() == before
