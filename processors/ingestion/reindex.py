"""Rebuilding the search index from the log: every live file re-read, re-chunked and re-embedded into a fresh generation.

The `documents` topic says which files exist and where their bytes are; the blob store has the
bytes. `rebuild_search_index` folds the topic up to its end, ingests every file not deleted into
`index.fresh_generation()` with the ingester's own pipeline, switches readers to it, then applies
what was appended meanwhile (uploads indexed again, deletions applied), since writes that reached
the old generation during the rebuild went with it. It writes nothing to the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from events.blobs import BlobCorrupted, BlobNotFound, BlobStore
from kernel.codec import AvroCodec, UndecodableMessage
from events.documents import FileDeleted, FileUploaded
from kernel.envelope import Envelope
from kernel.log import EventLog, LogRecord
from events.topics import DOCUMENTS
from processors.ingestion.chunking import Tokenizer
from processors.ingestion.ingester import Unreadable, embedded_text, indexed_chunks, read_document
from projections.search.embedding import Embedder
from projections.search.index import SearchIndex

REBUILD_GROUP = "search.rebuild"


@dataclass(kw_only=True)
class RebuildReport:
    files: int = 0
    chunks: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # file id -> why it was left out
    caught_up: int = 0  # records appended during the rebuild, applied after the switch

    def summary(self) -> str:
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        return f"{self.files} files, {self.chunks} chunks{skipped}; {self.caught_up} later records applied"


async def rebuild_search_index(
    *,
    log: EventLog,
    codec: AvroCodec,
    blobs: BlobStore,
    index: SearchIndex,
    embedder: Embedder,
    tokenizer: Tokenizer,
    progress: Callable[[str], None] = lambda line: None,
    embed_batch: int = 64,
) -> RebuildReport:
    """Refill the index from the log in a fresh generation, switch to it, catch up; see the module docstring."""
    report = RebuildReport()
    reader = _DocumentReader(log=log, codec=codec)
    try:
        live: dict[str, Envelope] = {}  # file id -> its upload, in upload order
        for envelope in await reader.read_to_end():
            match envelope.payload:
                case FileUploaded(file_id=file_id):
                    live[file_id] = envelope
                case FileDeleted(file_id=file_id):
                    live.pop(file_id, None)
        progress(f"{len(live)} files to index")
        generation = await index.fresh_generation()
        try:
            for number, upload in enumerate(live.values(), start=1):
                outcome = await _index_file(upload, blobs=blobs, index=generation, embedder=embedder,
                                            tokenizer=tokenizer, embed_batch=embed_batch, report=report)
                progress(f"[{number}/{len(live)}] {upload.payload.file_id} {upload.payload.filename!r}: {outcome}")
        except BaseException:
            await index.discard_generation(generation)
            raise
        await index.switch_to(generation)
        progress(f"switched to the new index: {report.summary()}")
        for envelope in await reader.read_to_end():
            report.caught_up += 1
            match envelope.payload:
                case FileUploaded():
                    await _index_file(envelope, blobs=blobs, index=index, embedder=embedder, tokenizer=tokenizer,
                                      embed_batch=embed_batch, report=report)
                case FileDeleted(file_id=file_id):
                    await index.delete_file(org_id=envelope.actor.org_id, workspace_id=envelope.actor.workspace_id, file_id=file_id)
    finally:
        await reader.close()
    return report


async def _index_file(
    envelope: Envelope, *, blobs: BlobStore, index: SearchIndex, embedder: Embedder, tokenizer: Tokenizer,
    embed_batch: int, report: RebuildReport,
) -> str:
    upload: FileUploaded = envelope.payload
    try:
        read = await read_document(await blobs.get(upload.digest), upload, tokenizer=tokenizer)
    except (Unreadable, BlobNotFound, BlobCorrupted) as error:
        reason = error.reason if isinstance(error, Unreadable) else error.detail
        report.skipped[upload.file_id] = reason
        return f"skipped ({reason})"
    for start in range(0, len(read.chunks), embed_batch):
        batch = read.chunks[start : start + embed_batch]
        vectors = await embedder.embed([embedded_text(read.title, chunk) for chunk in batch])
        await index.upsert(indexed_chunks(upload, org_id=envelope.actor.org_id, title=read.title, chunks=batch, vectors=vectors))
    report.files += 1
    report.chunks += len(read.chunks)
    return f"{len(read.chunks)} chunks"


class _DocumentReader:
    """Reads `documents` from the beginning, each call up to the end the topic has when it is made."""

    def __init__(self, *, log: EventLog, codec: AvroCodec) -> None:
        self._log = log
        self._codec = codec
        self._reached: dict[int, int] = {}
        self._consumer: AsyncIterator[list[LogRecord]] = log.consume(group=REBUILD_GROUP, topics=(DOCUMENTS,))

    async def read_to_end(self) -> Sequence[Envelope]:
        ends = {partition: end for partition, end in (await self._log.end_offsets(DOCUMENTS)).items() if end >= 0}
        envelopes: list[Envelope] = []
        while any(self._reached.get(partition, -1) < end for partition, end in ends.items()):
            for record in await anext(self._consumer):
                self._reached[record.partition] = record.offset
                try:
                    envelopes.append(self._codec.decode(record.value))
                except UndecodableMessage:
                    continue  # dead-lettered by the live consumers
        return envelopes

    async def close(self) -> None:
        await self._consumer.aclose()  # type: ignore[attr-defined]
