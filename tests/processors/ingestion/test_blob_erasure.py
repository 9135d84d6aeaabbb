"""The blob eraser on `SubjectErased`: every blob sealed under the erased key leaves the store, whoever put it."""

from datetime import UTC, datetime
from pathlib import Path

from events.blobs import BlobStoreUnavailable, DirectoryBlobStore
from events.erasure import SubjectErased
from events.key_files import KeyFileStore
from events.sealed_blobs import SealingBlobStore, owners_within
from events.topics import DOCUMENTS
from kernel.envelope import Actor, Envelope
from kernel.runtime import Delivery, encode
from kernel.sealing import Subject, seal_blob
from processors.ingestion.blob_erasure import BLOB_ERASURE_GROUP, BlobEraser
from turnlog.adapters import build_codec

ADMIN = Actor(user_id="admin", org_id="org_acme", workspace_id="")
ADA = Subject(org_id="org_acme", user_id="ada")
BOB = Subject(org_id="org_acme", user_id="bob")


async def test_an_erasure_sweeps_the_users_export_parts_and_tool_outputs_and_leaves_others(tmp_path: Path, embedded_log) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    codec = build_codec(keys)
    blobs = SealingBlobStore(inner=DirectoryBlobStore(root=tmp_path / "blobs"), keys=keys)
    await blobs.start()
    try:
        adas = [await blobs.put(data, owner=ADA) for data in (b'{"conversations": [', b"a whole tool result", b"\x89PNG chart")]
        bobs = await blobs.put(b"bob's export part", owner=BOB)
        eraser = BlobEraser(blobs)
        assert eraser.processor().group == BLOB_ERASURE_GROUP
        assert eraser.processor().reacts_to == frozenset({"SubjectErased"})

        keys.destroy(ADA)
        erased = SubjectErased(org_id="org_acme", user_id="ada", requested_by="admin", erased_at=datetime(2026, 12, 5, tzinfo=UTC))
        [record] = await embedded_log.append([encode(codec, Envelope.wrap(erased, key=erased.subject_key, actor=ADMIN), topic=DOCUMENTS)])
        assert await eraser.react([Delivery(record=record, envelope=codec.decode(record.value))]) == []

        assert [await blobs.exists(ref) for ref in adas] == [False, False, False]
        assert await blobs.get(bobs) == b"bob's export part"
    finally:
        await blobs.close()


async def test_blobs_stored_before_marks_are_marked_once_and_an_erased_subjects_deleted(tmp_path: Path) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    unmarked = DirectoryBlobStore(root=tmp_path / "blobs")  # what an older turnlog wrote: sealed, no marks
    await unmarked.start()
    adas = await unmarked.put(seal_blob(keys.data_key(ADA), b"ada's upload", subject=ADA))
    bobs = await unmarked.put(seal_blob(keys.data_key(BOB), b"bob's upload", subject=BOB))
    blobs = SealingBlobStore(inner=DirectoryBlobStore(root=tmp_path / "blobs"), keys=keys)
    await blobs.start()
    try:
        keys.destroy(ADA)
        eraser = BlobEraser(blobs)
        assert await blobs.sweep_subject(ADA) == 0  # no marks yet: the erasure alone cannot find it
        await eraser.index_existing()
        assert not await blobs.exists(adas)
        assert await blobs.index_complete()
        keys.destroy(BOB)
        assert await blobs.sweep_subject(BOB) == 1 and not await blobs.exists(bobs)
    finally:
        await blobs.close()


async def test_marking_older_blobs_waits_out_an_unavailable_store_and_starts_over(tmp_path: Path) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    inner = DirectoryBlobStore(root=tmp_path / "blobs")
    blobs = SealingBlobStore(inner=inner, keys=keys)
    await blobs.start()
    try:
        await inner.put(seal_blob(keys.data_key(BOB), b"bob's upload", subject=BOB))
        outages = [BlobStoreUnavailable(detail="the S3 bucket refused the request: SlowDown")]
        listing = inner.digests

        def digests():
            if outages:
                raise outages.pop()
            return listing()

        inner.digests = digests
        await BlobEraser(blobs).index_existing(retry_s=0.01)
        assert outages == [] and await blobs.index_complete()
        assert len([mark async for mark in blobs.marked(owners_within(BOB))]) == 1
    finally:
        await blobs.close()


async def test_a_store_away_when_asked_is_asked_again_before_a_whole_sweep(tmp_path: Path) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    blobs = SealingBlobStore(inner=DirectoryBlobStore(root=tmp_path / "blobs"), keys=keys)
    await blobs.start()
    try:
        await blobs.sweep_erased()  # the index is complete
        answers = [BlobStoreUnavailable(detail="the S3 bucket refused the request: SlowDown")]
        asked, sweeps = blobs.index_complete, []

        async def index_complete() -> bool:
            if answers:
                raise answers.pop()
            return await asked()

        async def sweep_erased() -> int:
            sweeps.append(True)
            return 0

        blobs.index_complete, blobs.sweep_erased = index_complete, sweep_erased
        await BlobEraser(blobs).index_existing(retry_s=0.01)
        assert answers == [] and sweeps == []
    finally:
        await blobs.close()
