"""Sealed blobs: an owner's upload is ciphertext at rest, opens for readers, and is gone once the owner is erased."""

from pathlib import Path

import pytest

from events.blobs import BlobCorrupted, BlobNotFound, DirectoryBlobStore
from events.key_files import KeyFileStore
from events.sealed_blobs import SealingBlobStore, owners_within, put_owned
from kernel.key_store import SubjectErased
from kernel.sealing import Subject, seal_blob

ALICE = Subject(org_id="org_1", user_id="alice")
BOB = Subject(org_id="org_1", user_id="bob")
PDF = b"%PDF-1.7 the keeper trims the wick at dusk"


@pytest.fixture
async def stores(tmp_path: Path):
    keys = KeyFileStore(root=tmp_path / "keys")
    inner = DirectoryBlobStore(root=tmp_path / "blobs")
    blobs = SealingBlobStore(inner=inner, keys=keys)
    await blobs.start()
    try:
        yield blobs, keys, tmp_path / "blobs"
    finally:
        await blobs.close()


class HeaderCounting(DirectoryBlobStore):
    """The directory adapter, counting the headers read: a sweep by marks must read no one else's."""

    heads = 0

    async def head(self, blob, size: int) -> bytes:
        self.heads += 1
        return await super().head(blob, size)


def stored_bytes(root: Path) -> list[bytes]:
    return [path.read_bytes() for path in (root / "sha256").rglob("*") if path.is_file()]


async def test_an_owners_blob_is_ciphertext_at_rest_and_opens_for_any_reader(stores) -> None:
    blobs, keys, root = stores
    ref = await blobs.put(PDF, owner=ALICE)
    assert all(b"keeper" not in data for data in stored_bytes(root))
    assert await blobs.get(ref) == PDF and await blobs.get(ref.digest) == PDF
    assert await blobs.exists(ref)
    # The same bytes from another user are another blob: no dedupe across keys, so erasing one leaves the other.
    assert (await blobs.put(PDF, owner=BOB)).digest != ref.digest


async def test_an_erased_owners_blob_is_not_found_and_others_still_open(stores) -> None:
    blobs, keys, _ = stores
    alices, bobs = await blobs.put(PDF, owner=ALICE), await blobs.put(PDF, owner=BOB)
    keys.destroy(ALICE)
    with pytest.raises(BlobNotFound):
        await blobs.get(alices)
    assert await blobs.get(bobs) == PDF
    with pytest.raises(SubjectErased):
        await blobs.put(b"more", owner=ALICE)


async def test_blobs_without_an_owner_and_those_from_before_sealing_read_as_stored(stores) -> None:
    blobs, _, root = stores
    ref = await blobs.put(b"a tool's whole result")
    assert await blobs.get(ref) == b"a tool's whole result"
    legacy = DirectoryBlobStore(root=root)
    await legacy.start()
    old = await legacy.put(b"uploaded before sealing")
    assert await blobs.get(old) == b"uploaded before sealing"


async def test_a_sealed_blob_that_does_not_open_is_corrupted(stores, tmp_path: Path) -> None:
    blobs, keys, root = stores
    other_keys = KeyFileStore(root=tmp_path / "other-keys")
    forged = SealingBlobStore(inner=DirectoryBlobStore(root=root), keys=other_keys)
    await forged.start()
    ref = await forged.put(PDF, owner=ALICE)  # sealed under another store's key for "alice"
    keys.data_key(ALICE)
    with pytest.raises(BlobCorrupted):
        await blobs.get(ref)


async def test_put_owned_seals_where_the_store_seals(stores, tmp_path: Path) -> None:
    blobs, _, root = stores
    sealed = await put_owned(blobs, PDF, owner=ALICE)
    assert PDF not in (root / "sha256" / sealed.digest[:2] / sealed.digest[2:]).read_bytes()
    plain_store = DirectoryBlobStore(root=tmp_path / "plain")
    await plain_store.start()
    plain = await put_owned(plain_store, PDF, owner=ALICE)  # a store that does not seal (a unit test's) keeps the bytes
    assert await plain_store.get(plain) == PDF


async def test_a_sweep_deletes_what_erased_keys_sealed_and_nothing_else(stores) -> None:
    blobs, keys, root = stores
    carol = Subject(org_id="org_2", user_id="carol")
    alices = [await blobs.put(b"alice's export part %d" % index, owner=ALICE) for index in range(3)]
    bobs = await blobs.put(b"bob's tool result", owner=BOB)
    carols = await blobs.put(b"carol's chart.png", owner=carol)
    plaintext = await blobs.put(b"an upload from before sealing")
    foreign = await blobs.put(b"TLSB\x01\x00\x05nokey and whatever follows")  # the magic, but no key id of ours
    assert await blobs.sweep_erased() == 0  # nobody erased yet

    keys.destroy(ALICE)
    assert await blobs.sweep_erased() == 3
    assert [await blobs.exists(ref) for ref in alices] == [False, False, False]
    assert await blobs.get(bobs) == b"bob's tool result" and await blobs.get(carols) == b"carol's chart.png"
    assert await blobs.get(plaintext) == b"an upload from before sealing" and await blobs.exists(foreign)
    assert await blobs.sweep_erased() == 0  # again: nothing left to do

    keys.destroy(Subject(org_id="org_1"))  # the org: every user's key with it
    assert await blobs.sweep_erased() == 1
    assert not await blobs.exists(bobs) and await blobs.get(carols) == b"carol's chart.png"
    assert len(stored_bytes(root)) == 3  # carol's, the plaintext, the foreign one


async def marks_of(blobs: SealingBlobStore, subject: Subject) -> list[str]:
    return sorted([digest async for _, digest in blobs.marked(owners_within(subject))])


async def test_an_owners_blobs_are_marked_as_theirs_and_unmarked_when_deleted(stores) -> None:
    blobs, _, _ = stores
    alices = [await blobs.put(b"alice %d" % index, owner=ALICE) for index in range(2)]
    bobs = await blobs.put(b"bob", owner=BOB)
    await blobs.put(b"nobody's")  # no owner, no mark
    assert await marks_of(blobs, ALICE) == sorted(ref.digest for ref in alices)
    assert await marks_of(blobs, BOB) == [bobs.digest]
    assert len(await marks_of(blobs, Subject(org_id="org_1"))) == 3  # the org's listing holds its users'
    await blobs.delete(alices[0])
    assert await marks_of(blobs, ALICE) == [alices[1].digest]


async def test_an_erasure_deletes_the_subjects_marked_blobs_without_reading_anyone_elses(tmp_path: Path) -> None:
    keys = KeyFileStore(root=tmp_path / "keys")
    inner = HeaderCounting(root=tmp_path / "blobs")
    blobs = SealingBlobStore(inner=inner, keys=keys)
    await blobs.start()
    carol = Subject(org_id="org_2", user_id="carol")
    alices = [await blobs.put(b"alice's export part %d" % index, owner=ALICE) for index in range(3)]
    bobs = await blobs.put(b"bob's tool result", owner=BOB)
    carols = [await blobs.put(b"carol's file %d" % index, owner=carol) for index in range(20)]
    with pytest.raises(ValueError, match="not erased"):
        await blobs.sweep_subject(ALICE)

    keys.destroy(ALICE)
    inner.heads = 0
    assert await blobs.sweep_subject(ALICE) == 3
    assert inner.heads == 0
    assert [await blobs.exists(ref) for ref in alices] == [False] * 3 and await marks_of(blobs, ALICE) == []
    assert await blobs.get(bobs) == b"bob's tool result"
    assert await blobs.sweep_subject(ALICE) == 0  # again: nothing left

    keys.destroy(Subject(org_id="org_1"))  # the org: its users' blobs with its own
    assert await blobs.sweep_subject(Subject(org_id="org_1")) == 1
    assert not await blobs.exists(bobs)
    assert all([await blobs.exists(ref) for ref in carols]) and len(await marks_of(blobs, carol)) == 20


async def test_a_whole_sweep_marks_older_blobs_and_completes_the_index(stores) -> None:
    blobs, keys, root = stores
    # Sealed before marks existed: the bytes a sealing store writes, stored without a mark.
    unmarked = DirectoryBlobStore(root=root)
    await unmarked.start()
    legacy_alice = await unmarked.put(seal_blob(keys.data_key(ALICE), b"alice, long ago", subject=ALICE))
    legacy_bob = await unmarked.put(seal_blob(keys.data_key(BOB), b"bob, long ago", subject=BOB))
    assert not await blobs.index_complete()
    assert await marks_of(blobs, ALICE) == []

    keys.destroy(ALICE)
    assert await blobs.sweep_erased() == 1  # alice's deleted on the way, bob's marked
    assert not await blobs.exists(legacy_alice)
    assert await marks_of(blobs, BOB) == [legacy_bob.digest]
    assert await blobs.index_complete()



async def test_on_s3_an_erasure_lists_the_subjects_marks_across_pages(moto_server, tmp_path: Path) -> None:
    """The same index on the S3 adapter (a real moto_server), listed two keys a page."""
    import uuid

    from events.s3_blobs import S3BlobStore, S3Location
    from moto_aws import REGION

    bucket = f"sealed-{uuid.uuid4().hex[:12]}"
    moto_server.client().create_bucket(Bucket=bucket)
    location = S3Location(bucket=bucket, prefix="uploads/", endpoint_url=moto_server.endpoint_url, region=REGION)
    keys = KeyFileStore(root=tmp_path / "keys")
    blobs = SealingBlobStore(inner=S3BlobStore(location=location, list_page_size=2), keys=keys)
    await blobs.start()
    try:
        alices = [await blobs.put(b"alice's part %d" % index, owner=ALICE) for index in range(5)]
        bobs = [await blobs.put(b"bob's part %d" % index, owner=BOB) for index in range(3)]
        keys.destroy(ALICE)
        assert await blobs.sweep_subject(ALICE) == 5
        assert [await blobs.exists(ref) for ref in alices] == [False] * 5
        assert [await blobs.get(ref) for ref in bobs] == [b"bob's part %d" % index for index in range(3)]
        assert not await blobs.index_complete()
        assert await blobs.sweep_erased() == 0  # nothing of Alice's left; Bob's were marked already
        assert await blobs.index_complete()
        assert len(await marks_of(blobs, BOB)) == 3 and await marks_of(blobs, ALICE) == []
    finally:
        await blobs.close()
