"""The ingester: an uploaded file's bytes -> text -> chunks -> vectors in the search index, with its progress on the log.

It consumes `documents`. On `FileUploaded` it appends `FileIngestionProgressed(extracting)`, reads
the blob, extracts and chunks the text on a worker thread, appends `FileIngestionProgressed(indexing)`,
embeds and upserts the chunks batch by batch (appending progress after each batch), and ends
with `FileIndexed`, or `FileIngestionFailed` with a reason a person can act on when the file
cannot be read. On `FileDeleted` it removes the file's chunks from the index; on `SubjectErased`, every
listed file's chunks and sealed blob.

Delivery is at least once, so every step may happen again: chunk ids are derived from the file id
and the chunk's ordinal (an upsert replaces), progress events are only progress, and an upload is
skipped when the log already holds its outcome (indexed, failed or deleted) after it. The final
event is the reaction the runtime appends together with the consumer's progress; progress events
are appended as they happen, without waiting for a disk flush (they are provisional).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from events.blobs import BlobCorrupted, BlobNotFound, BlobStore
from kernel.codec import AvroCodec, UndecodableMessage
from events.documents import FileDeleted, FileIndexed, FileIngestionFailed, FileIngestionProgressed, FileUploaded
from events.erasure import SubjectErased
from kernel.envelope import Envelope
from kernel.errors import Unavailable
from kernel.log import EventLog, OutgoingRecord
from events.topics import DOCUMENTS
from processors.ingestion.chunking import ChunkDraft, Tokenizer, chunk_document
from processors.ingestion.extraction.dispatch import extract
from processors.ingestion.extraction.document import ExtractedDocument, ExtractionFailed, MediaType
from kernel.runtime import Delivery, Processor, encode
from projections.search.embedding import Embedder, headed_text
from projections.search.index import IndexedChunk, SearchIndex

logger = logging.getLogger(__name__)

INGESTER_GROUP = "ingester"
_FINISHED = (FileIndexed, FileIngestionFailed, FileDeleted)


def chunk_id(file_id: str, ordinal: int) -> str:
    """A chunk's id in every index: the same file and ordinal always name the same chunk."""
    return f"{file_id}:{ordinal}"


def chunk_location(chunk: ChunkDraft) -> str:
    """Where a chunk is, for a citation: its page, else its heading, else nothing."""
    if chunk.page is not None:
        return f"page {chunk.page}"
    return chunk.heading or ""


def embedded_text(title: str, chunk: ChunkDraft) -> str:
    """What is embedded for a chunk: its document's title and heading above its text (`headed_text`). The index keeps
    the text alone, for BM25 and for quoting."""
    return headed_text(title, chunk.heading, chunk.text)


def indexed_chunks(upload: FileUploaded, *, org_id: str, title: str, chunks: Sequence[ChunkDraft], vectors) -> list[IndexedChunk]:
    """The index records of a file's chunks: each carries the file's org, workspace, owner and ACL."""
    return [
        IndexedChunk(
            chunk_id=chunk_id(upload.file_id, chunk.ordinal),
            file_id=upload.file_id,
            org_id=org_id,
            workspace_id=upload.workspace_id,
            owner_id=upload.owner_id,
            acl=upload.acl,  # type: ignore[arg-type]
            title=title,
            location=chunk_location(chunk),
            ordinal=chunk.ordinal,
            text=chunk.text,
            vector=vector,
        )
        for chunk, vector in zip(chunks, vectors, strict=True)
    ]


@dataclass(frozen=True, kw_only=True)
class ReadDocument:
    """A file's text, cut into chunks, ready to embed."""

    document: ExtractedDocument
    chunks: tuple[ChunkDraft, ...]
    title: str


class Unreadable(Exception):
    """The file cannot be ingested, for a reason a person can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def read_document(data: bytes, upload: FileUploaded, *, tokenizer: Tokenizer) -> ReadDocument:
    """Extract and chunk on a worker thread (CPU-bound); `Unreadable` for a file with no usable text."""

    def work() -> ReadDocument:
        try:
            document = extract(data, MediaType(upload.media_type))
        except ExtractionFailed as error:
            raise Unreadable(error.reason) from None
        except ValueError:
            raise Unreadable(f"turnlog does not read files of type {upload.media_type}") from None
        chunks = chunk_document(document, tokenizer=tokenizer)
        if not chunks:
            raise Unreadable("no text found in the file")
        return ReadDocument(document=document, chunks=chunks, title=document.title.strip() or upload.filename)

    return await asyncio.to_thread(work)


class Ingester:
    """Turns uploads into indexed chunks; see the module docstring."""

    def __init__(
        self,
        *,
        log: EventLog,
        codec: AvroCodec,
        blobs: BlobStore,
        index: SearchIndex,
        embedder: Embedder,
        tokenizer: Tokenizer,
        embed_batch: int = 64,
        deletion_check_s: float = 2.0,
    ) -> None:
        self._log = log
        self._codec = codec
        self._blobs = blobs
        self._index = index
        self._embedder = embedder
        self._tokenizer = tokenizer
        self._embed_batch = embed_batch
        self._deletion_check_s = deletion_check_s

    def processor(self) -> Processor:
        # Small batches: one file can take seconds to minutes, and a batch is committed as a whole.
        return Processor(group=INGESTER_GROUP, topics=(DOCUMENTS,), react=self.react, max_batch=8)

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        outputs: list[OutgoingRecord] = []
        for delivery in deliveries:
            envelope = delivery.envelope
            match envelope.payload:
                case FileUploaded() as upload:
                    outcome = await self._ingest(envelope, upload, offset=delivery.record.offset)
                    if outcome is not None:
                        outputs.append(self._record(outcome, cause=envelope))
                case FileDeleted(file_id=file_id):
                    # The API names the file's org and workspace in the deletion's envelope.
                    removed = await self._index.delete_file(
                        org_id=envelope.actor.org_id, workspace_id=envelope.actor.workspace_id, file_id=file_id
                    )
                    logger.info("file %s deleted: %d chunks left the index", file_id, removed)
                case SubjectErased() as erased:
                    await self._erase(erased)
        return outputs

    async def _erase(self, erased: SubjectErased) -> None:
        """An erased user's (or org's) files leave the index, and their sealed blobs the blob store."""
        for file in erased.files:
            await self._index.delete_file(org_id=erased.org_id, workspace_id=file.workspace_id, file_id=file.file_id)
            try:
                await self._blobs.get(file.digest)
            except BlobNotFound:
                # Sealed under the destroyed key (or gone already): no one else's file can share these bytes.
                await self._blobs.delete(file.digest)
            except BlobCorrupted:
                pass
            # Opened: plaintext from before sealing, which another user's identical upload may share; it stays.
        logger.info("%s erased: %d files left the index", erased.subject_key, len(erased.files))

    async def _ingest(self, envelope: Envelope, upload: FileUploaded, *, offset: int) -> object | None:
        """The file's final event (FileIndexed or FileIngestionFailed), or None when there is nothing to do."""
        if any(isinstance(event, _FINISHED) for event in await self._events_after(upload.file_id, offset)):
            return None  # a redelivery: this upload was already indexed, failed or deleted
        last_check = time.monotonic()
        await self._progress(envelope, FileIngestionProgressed(file_id=upload.file_id, state="extracting"))
        try:
            data = await self._blobs.get(upload.digest)
        except BlobNotFound:
            return FileIngestionFailed(file_id=upload.file_id, reason="the uploaded bytes are no longer stored; upload the file again")
        except BlobCorrupted:
            return FileIngestionFailed(file_id=upload.file_id, reason="the stored copy of the file is damaged; upload the file again")
        try:
            read = await read_document(data, upload, tokenizer=self._tokenizer)
        except Unreadable as unreadable:
            return FileIngestionFailed(file_id=upload.file_id, reason=unreadable.reason)
        except (ImportError, OSError) as error:  # the process's fault (a library, the disk), not the file's: retried
            raise Unavailable(detail=f"files cannot be chunked now ({type(error).__name__}: {error})") from error
        except Exception as error:  # untrusted input drove the chunker into a bug: fail the file, not the partition
            logger.exception("file %s: chunking failed", upload.file_id)
            return FileIngestionFailed(file_id=upload.file_id, reason=f"turnlog could not process the file ({type(error).__name__})")
        total = len(read.chunks)
        pages = read.document.pages
        org_id = envelope.actor.org_id
        await self._progress(
            envelope, FileIngestionProgressed(file_id=upload.file_id, state="indexing", pages=pages, chunks_total=total)
        )
        for start in range(0, total, self._embed_batch):
            # Deleted while it was read or indexed (checked every few seconds, extraction's time included): stop,
            # and take out what earlier batches put in the index.
            if time.monotonic() - last_check >= self._deletion_check_s:
                last_check = time.monotonic()
                if any(isinstance(event, FileDeleted) for event in await self._events_after(upload.file_id, offset)):
                    await self._index.delete_file(org_id=org_id, workspace_id=upload.workspace_id, file_id=upload.file_id)
                    return None
            batch = read.chunks[start : start + self._embed_batch]
            vectors = await self._embedder.embed([embedded_text(read.title, chunk) for chunk in batch])
            await self._index.upsert(indexed_chunks(upload, org_id=org_id, title=read.title, chunks=batch, vectors=vectors))
            done = start + len(batch)
            if done < total:
                await self._progress(
                    envelope,
                    FileIngestionProgressed(
                        file_id=upload.file_id, state="indexing", pages=pages, chunks_total=total, chunks_indexed=done
                    ),
                )
        logger.info("file %s indexed: %d chunks, %d pages", upload.file_id, total, pages)
        return FileIndexed(file_id=upload.file_id, title=read.title, pages=pages, chunks=total)

    async def _events_after(self, file_id: str, offset: int) -> list[object]:
        """The file's events after `offset` (its upload's): on Kafka, a scan of the partition from there on."""
        events = []
        for record in await self._log.read(DOCUMENTS, key=file_id, after=offset):
            try:
                events.append(self._codec.decode(record.value).payload)
            except UndecodableMessage:
                continue  # dead-lettered by whoever consumed it
        return events

    async def _progress(self, cause: Envelope, event: FileIngestionProgressed) -> None:
        await self._log.append([self._record(event, cause=cause)], durable=False)

    def _record(self, event: object, *, cause: Envelope) -> OutgoingRecord:
        # The file's events keep the upload's actor: its org scopes every read of them.
        envelope = Envelope.wrap(event, key=cause.key, actor=cause.actor, cause=cause)
        return encode(self._codec, envelope, topic=DOCUMENTS)
