"""The ingester on the embedded log, a real blob directory, the real embedded index and the real MiniLM embedder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from events.blobs import DirectoryBlobStore
from events.catalog import EVENT_TYPES
from kernel.codec import AvroCodec
from events.documents import FileDeleted, FileIndexed, FileIngestionFailed, FileIngestionProgressed, FileUploaded
from events.embedded import EmbeddedLog
from kernel.envelope import Envelope, new_id
from kernel.errors import Unavailable
from kernel.log import LogRecord
from events.topics import DOCUMENTS
from kernel.envelope import Actor
from processors.ingestion.extraction.document import MediaType
from processors.ingestion.ingester import INGESTER_GROUP, Ingester, chunk_id
from kernel.runtime import Delivery, encode, run_processor
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.index import SearchScope

CODEC = AvroCodec(payload_types=EVENT_TYPES)
ADA = Actor(user_id="ada", org_id="org_acme", workspace_id="ws_research")
NOW = datetime(2026, 4, 25, 9, 30, tzinfo=UTC)

HANDBOOK = """# Team handbook

## Leave

Everyone gets twenty-five days of paid leave each year. Unused days carry over until March.

## Expenses

Keep every receipt. Travel is booked through the office, never on a personal card.
"""


@dataclass
class Plant:
    """The ingester and everything it works on, all real."""

    log: EmbeddedLog
    blobs: DirectoryBlobStore
    index: EmbeddedSearchIndex
    ingester: Ingester
    embedder: object

    async def upload(self, data: bytes, *, filename: str, media_type: MediaType, acl: str = "workspace",
                     actor: Actor = ADA) -> tuple[FileUploaded, LogRecord]:
        ref = await self.blobs.put(data)
        upload = FileUploaded(
            file_id=new_id("file"), workspace_id=actor.workspace_id, owner_id=actor.user_id, acl=acl, filename=filename,
            media_type=media_type.value, size=ref.size, digest=ref.digest, uploaded_at=NOW,
        )
        return upload, await self.append(upload, actor=actor)

    async def append(self, event: object, *, actor: Actor = ADA) -> LogRecord:
        envelope = Envelope.wrap(event, key=event.file_id, actor=actor)
        [record] = await self.log.append([encode(CODEC, envelope, topic=DOCUMENTS)])
        return record

    async def react(self, *records: LogRecord) -> list[object]:
        """One delivery of the records, its reactions appended as the runtime would; the reactions' payloads."""
        deliveries = [Delivery(record=record, envelope=CODEC.decode(record.value)) for record in records]
        outputs = await self.ingester.react(deliveries)
        await self.log.append(outputs)
        return [CODEC.decode(output.value).payload for output in outputs]

    async def history(self, file_id: str) -> list[object]:
        return [CODEC.decode(record.value).payload for record in await self.log.read(DOCUMENTS, key=file_id)]

    async def count(self, file_id: str | None = None, *, actor: Actor = ADA) -> int:
        return await self.index.count(org_id=actor.org_id, workspace_id=actor.workspace_id, file_id=file_id)

    async def search(self, text: str, *, actor: Actor = ADA):
        vector = (await self.embedder.embed([text]))[0]
        scope = SearchScope(org_id=actor.org_id, workspace_id=actor.workspace_id, user_id=actor.user_id)
        return await self.index.search(scope, text=text, vector=vector, limit=3)


@pytest.fixture
async def plant(tmp_path: Path, embedded_log: EmbeddedLog, embedder, wordpiece) -> AsyncIterator[Plant]:
    blobs = DirectoryBlobStore(root=tmp_path / "blobs")
    index = EmbeddedSearchIndex(directory=tmp_path / "search")
    await blobs.start()
    await index.start()
    ingester = Ingester(log=embedded_log, codec=CODEC, blobs=blobs, index=index, embedder=embedder, tokenizer=wordpiece)
    try:
        yield Plant(log=embedded_log, blobs=blobs, index=index, ingester=ingester, embedder=embedder)
    finally:
        await index.close()
        await blobs.close()


def states(history: Sequence[object]) -> list[str]:
    names = {FileUploaded: "uploaded", FileIndexed: "indexed", FileIngestionFailed: "failed", FileDeleted: "deleted"}
    return [event.state if isinstance(event, FileIngestionProgressed) else names[type(event)] for event in history]


async def test_a_pdf_is_extracted_chunked_embedded_and_indexed_page_by_page(plant: Plant, report_pdf: bytes) -> None:
    upload, record = await plant.upload(report_pdf, filename="q3.pdf", media_type=MediaType.PDF, acl="owner")
    [indexed] = await plant.react(record)

    assert isinstance(indexed, FileIndexed)
    assert (indexed.title, indexed.pages) == ("Quarterly Report", 3)
    history = await plant.history(upload.file_id)
    assert states(history) == ["uploaded", "extracting", "indexing", "indexed"]
    assert history[2] == FileIngestionProgressed(
        file_id=upload.file_id, state="indexing", pages=3, chunks_total=indexed.chunks, chunks_indexed=0
    )
    assert await plant.count(upload.file_id) == indexed.chunks >= 3  # a chunk never crosses a page

    [hit, *_] = await plant.search("Which region led with new contracts?")
    assert (hit.file_id, hit.chunk_id, hit.location, hit.title) == (upload.file_id, chunk_id(upload.file_id, 0), "page 1", "Quarterly Report")
    assert (hit.org_id, hit.workspace_id, hit.owner_id, hit.acl) == ("org_acme", "ws_research", "ada", "owner")
    assert "northern region" in hit.text
    # Owner-only: another member of the workspace never finds it.
    assert await plant.search("Which region led with new contracts?", actor=Actor(user_id="bob", org_id="org_acme", workspace_id="ws_research")) == []


async def test_progress_is_reported_batch_by_batch_and_headings_locate_chunks(plant: Plant) -> None:
    plant.ingester._embed_batch = 1  # one chunk per batch: a progress event after each
    long_handbook = HANDBOOK + "".join(f"\n## Policy {n}\n\n" + f"Rule {n} says to be kind to colleague number {n}. " * 30 for n in range(3))
    upload, record = await plant.upload(long_handbook.encode(), filename="handbook.md", media_type=MediaType.MARKDOWN)
    [indexed] = await plant.react(record)

    progress = [event for event in await plant.history(upload.file_id) if isinstance(event, FileIngestionProgressed)]
    assert [event.chunks_indexed for event in progress[1:]] == list(range(indexed.chunks))
    assert {event.chunks_total for event in progress[1:]} == {indexed.chunks}
    assert indexed.title == "Team handbook" and indexed.pages == 0
    [hit, *_] = await plant.search("How many days of paid leave do we get?")
    assert hit.location == "Leave" and "twenty-five days" in hit.text


@pytest.mark.parametrize(
    ("data", "filename", "media_type", "reason"),
    [
        (b"%PDF-1.7\n this is not really a PDF at all", "broken.pdf", MediaType.PDF, "the PDF is damaged"),
        (b"PK\x03\x04 not a zip archive", "broken.docx", MediaType.DOCX, "damaged"),
        (b"   \n\n  ", "blank.txt", MediaType.TEXT, "no text"),
    ],
)
async def test_an_unreadable_file_fails_with_a_reason_and_indexes_nothing(
    plant: Plant, data: bytes, filename: str, media_type: MediaType, reason: str
) -> None:
    upload, record = await plant.upload(data, filename=filename, media_type=media_type)
    [failed] = await plant.react(record)
    assert isinstance(failed, FileIngestionFailed) and reason in failed.reason
    assert states(await plant.history(upload.file_id)) == ["uploaded", "extracting", "failed"]
    assert await plant.count(upload.file_id) == 0


async def test_a_file_whose_bytes_are_gone_fails_instead_of_crashing(plant: Plant) -> None:
    upload, record = await plant.upload(HANDBOOK.encode(), filename="h.md", media_type=MediaType.MARKDOWN)
    await plant.blobs.delete(upload.digest)
    [failed] = await plant.react(record)
    assert isinstance(failed, FileIngestionFailed) and "upload the file again" in failed.reason


class FailsOnce:
    """The tokenizer the first time as when two first imports of transformers raced (the soak saw it): an ImportError."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self._inner, name)
        return self._once(attribute) if callable(attribute) else attribute

    def __call__(self, *args: object, **keywords: object) -> object:
        return self._once(self._inner)(*args, **keywords)

    def _once(self, function):
        def call(*args: object, **keywords: object) -> object:
            if not self.failed:
                self.failed = True
                raise ImportError("cannot import name 'PreTrainedTokenizerFast' from partially initialized module 'transformers'")
            return function(*args, **keywords)

        return call


async def test_a_fault_of_the_process_not_the_file_is_retried_and_never_fails_the_file(plant: Plant, wordpiece) -> None:
    flaky = FailsOnce(wordpiece)
    plant.ingester = Ingester(log=plant.log, codec=CODEC, blobs=plant.blobs, index=plant.index, embedder=plant.embedder, tokenizer=flaky)
    upload, record = await plant.upload(HANDBOOK.encode(), filename="h.md", media_type=MediaType.MARKDOWN)
    with pytest.raises(Unavailable, match="files cannot be chunked now"):
        await plant.react(record)  # the runtime retries the batch (and logs the outage once)
    assert flaky.failed and "failed" not in states(await plant.history(upload.file_id))
    [indexed] = await plant.react(record)
    assert isinstance(indexed, FileIndexed)


async def test_a_redelivered_upload_is_harmless(plant: Plant) -> None:
    upload, record = await plant.upload(HANDBOOK.encode(), filename="h.md", media_type=MediaType.MARKDOWN)
    # The first delivery crashed after indexing but before its outcome was written: it starts over.
    await plant.ingester.react([Delivery(record=record, envelope=CODEC.decode(record.value))])
    chunks = await plant.count(upload.file_id)
    [indexed] = await plant.react(record)
    assert isinstance(indexed, FileIndexed) and await plant.count(upload.file_id) == chunks == indexed.chunks
    # Once the outcome is on the log, another delivery does nothing at all.
    before = await plant.history(upload.file_id)
    assert await plant.react(record) == []
    assert await plant.history(upload.file_id) == before


async def test_a_deleted_file_leaves_the_index_and_a_late_redelivery_does_not_bring_it_back(plant: Plant) -> None:
    kept, kept_record = await plant.upload(b"Kept notes about the lighthouse keeper.", filename="kept.txt", media_type=MediaType.TEXT)
    doomed, doomed_record = await plant.upload(HANDBOOK.encode(), filename="h.md", media_type=MediaType.MARKDOWN)
    await plant.react(kept_record, doomed_record)
    assert await plant.count(doomed.file_id) > 0

    deletion = await plant.append(FileDeleted(file_id=doomed.file_id, deleted_at=NOW))
    assert await plant.react(deletion) == []
    assert await plant.count(doomed.file_id) == 0
    assert await plant.count(kept.file_id) == 1
    assert await plant.react(doomed_record) == []  # redelivered after its deletion: skipped
    assert await plant.count(doomed.file_id) == 0


async def test_a_file_deleted_while_it_is_indexed_stops_and_leaves_nothing(plant: Plant, embedder) -> None:
    holder: dict[str, str] = {}

    class DeletingMidway:
        """The real embedder, but the owner deletes the file once its first batch is embedded."""

        async def embed(self, texts: Sequence[str]) -> np.ndarray:
            vectors = await embedder.embed(texts)
            if "deleted" not in holder:
                holder["deleted"] = "yes"
                await plant.append(FileDeleted(file_id=holder["file_id"], deleted_at=NOW))
            return vectors

    plant.ingester._embedder = DeletingMidway()
    plant.ingester._embed_batch = 1
    plant.ingester._deletion_check_s = 0.0
    upload, record = await plant.upload(HANDBOOK.encode(), filename="h.md", media_type=MediaType.MARKDOWN)
    holder["file_id"] = upload.file_id
    assert await plant.react(record) == []
    assert await plant.count(upload.file_id) == 0
    assert not any(isinstance(event, FileIndexed) for event in await plant.history(upload.file_id))


async def test_a_file_deleted_while_it_is_read_is_never_embedded(plant: Plant, embedder) -> None:
    """A deletion that lands while the file's bytes are read and chunked (a big PDF takes seconds) is seen before the
    first batch is embedded, not after it."""
    holder: dict[str, str] = {}
    embedded: list[str] = []
    blobs = plant.blobs

    class DeletedOnRead:
        async def get(self, digest: str) -> bytes:
            await plant.append(FileDeleted(file_id=holder["file_id"], deleted_at=NOW))
            return await blobs.get(digest)

    class Counting:
        async def embed(self, texts: Sequence[str]) -> np.ndarray:
            embedded.extend(texts)
            return await embedder.embed(texts)

    plant.ingester._blobs = DeletedOnRead()
    plant.ingester._embedder = Counting()
    plant.ingester._deletion_check_s = 0.0  # every check is due: the test does not wait out the interval
    upload, record = await plant.upload(HANDBOOK.encode(), filename="h.md", media_type=MediaType.MARKDOWN)
    holder["file_id"] = upload.file_id
    assert await plant.react(record) == []
    assert embedded == []
    assert await plant.count(upload.file_id) == 0
    assert not any(isinstance(event, FileIndexed) for event in await plant.history(upload.file_id))


async def test_the_ingester_runs_as_a_processor_on_the_log(plant: Plant) -> None:
    task = asyncio.create_task(run_processor(plant.ingester.processor(), log=plant.log, codec=CODEC))
    try:
        upload, _ = await plant.upload(b"Lighthouse keepers trim the wick at dusk.", filename="notes.txt", media_type=MediaType.TEXT)
        async with asyncio.timeout(30):
            while not any(isinstance(event, FileIndexed) for event in await plant.history(upload.file_id)):
                await asyncio.sleep(0.05)
        assert await plant.log.committed(group=INGESTER_GROUP, topic=DOCUMENTS, key=upload.file_id) >= 0
        assert await plant.count(upload.file_id) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
