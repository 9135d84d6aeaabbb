"""The ingester on `SubjectErased`: the erased user's chunks leave the index and their sealed blobs the store; no one else's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from events.blobs import DirectoryBlobStore
from events.documents import FileIndexed, FileUploaded
from events.erasure import ErasedFile, SubjectErased
from events.key_files import KeyFileStore
from events.sealed_blobs import SealingBlobStore
from events.topics import DOCUMENTS
from kernel.envelope import Actor, Envelope, new_id
from kernel.runtime import Delivery, encode
from kernel.sealing import Erased, Subject
from processors.ingestion.extraction.document import MediaType
from processors.ingestion.ingester import Ingester
from projections.search.embedded import EmbeddedSearchIndex
from turnlog.adapters import build_codec

ADA = Actor(user_id="ada", org_id="org_acme", workspace_id="ws_research")
BOB = Actor(user_id="bob", org_id="org_acme", workspace_id="ws_research")
ADMIN = Actor(user_id="admin", org_id="org_acme", workspace_id="")
NOW = datetime(2026, 12, 5, tzinfo=UTC)
NOTES = b"# Notes\n\nThe harbour gate closes two hours before low water.\n"


async def test_an_erasure_drops_the_users_chunks_and_sealed_blobs_and_leaves_others(
    tmp_path: Path, embedded_log, embedder, wordpiece
) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    codec = build_codec(keys)
    inner = DirectoryBlobStore(root=tmp_path / "blobs")
    blobs = SealingBlobStore(inner=inner, keys=keys)
    index = EmbeddedSearchIndex(directory=tmp_path / "search")
    await blobs.start()
    await index.start()
    ingester = Ingester(log=embedded_log, codec=codec, blobs=blobs, index=index, embedder=embedder, tokenizer=wordpiece)

    async def react(envelope: Envelope) -> list[object]:
        [record] = await embedded_log.append([encode(codec, envelope, topic=DOCUMENTS)])
        outputs = await ingester.react([Delivery(record=record, envelope=codec.decode(record.value))])
        await embedded_log.append(outputs)
        return [codec.decode(output.value).payload for output in outputs]

    async def indexed(actor: Actor, *, sealed: bool = True) -> ErasedFile:
        subject = Subject(org_id=actor.org_id, user_id=actor.user_id)
        ref = await blobs.put(NOTES + actor.user_id.encode(), owner=subject if sealed else None)
        upload = FileUploaded(
            file_id=new_id("file"), workspace_id=actor.workspace_id, owner_id=actor.user_id, acl="workspace",
            filename="notes.md", media_type=MediaType.MARKDOWN.value, size=len(NOTES), digest=ref.digest, uploaded_at=NOW,
        )
        [outcome] = await react(Envelope.wrap(upload, key=upload.file_id, actor=actor))
        assert isinstance(outcome, FileIndexed)
        return ErasedFile(file_id=upload.file_id, workspace_id=upload.workspace_id, digest=ref.digest)

    async def chunks(file: ErasedFile) -> int:
        return await index.count(org_id="org_acme", workspace_id=file.workspace_id, file_id=file.file_id)

    try:
        adas, adas_legacy, bobs = await indexed(ADA), await indexed(ADA, sealed=False), await indexed(BOB)
        keys.destroy(Subject(org_id="org_acme", user_id="ada"))
        erased = SubjectErased(org_id="org_acme", user_id="ada", files=(adas, adas_legacy), requested_by="admin", erased_at=NOW)
        assert await react(Envelope.wrap(erased, key=erased.subject_key, actor=ADMIN)) == []

        assert await chunks(adas) == 0 and await chunks(adas_legacy) == 0
        assert not await inner.exists(adas.digest)
        assert await inner.exists(adas_legacy.digest)  # plaintext from before sealing: another upload may share it
        assert await chunks(bobs) > 0 and await blobs.get(bobs.digest) == NOTES + b"bob"
        # Her upload event, redelivered after the erasure, is nothing to ingest: the runtime never hands it over.
        [first] = await embedded_log.read(DOCUMENTS, key=adas.file_id, limit=1)
        assert isinstance(codec.decode(first.value).payload, Erased)
    finally:
        await index.close()
        await blobs.close()
