"""The blob store contract: every adapter of `events.blobs.BlobStore` passes these.

The S3 adapter runs against a real `moto_server` process (an in-memory S3 over HTTP, `tests/moto_aws.py`), one
bucket per test.
"""

import asyncio
import hashlib
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from events.blobs import (
    BlobCorrupted,
    BlobNotFound,
    BlobRef,
    BlobStore,
    BlobStoreUnavailable,
    DirectoryBlobStore,
    blob_key,
)
from moto_aws import REGION, MotoServer, free_port
from turnlog.adapters import build_blob_store
from events.s3_blobs import S3BlobStore, S3Location, parse_s3_url
from kernel.errors import NotFound, Unavailable

@dataclass(frozen=True, kw_only=True)
class Backend:
    """One adapter's storage, plus a way around the store to read and damage what it holds."""

    url: str
    raw_read: Callable[[str], bytes | None]
    raw_write: Callable[[str, bytes], None]


def directory_backend(root: Path) -> Backend:
    def raw_read(digest: str) -> bytes | None:
        path = root / blob_key(digest)
        return path.read_bytes() if path.exists() else None

    def raw_write(digest: str, data: bytes) -> None:
        (root / blob_key(digest)).write_bytes(data)

    return Backend(url=root.as_uri(), raw_read=raw_read, raw_write=raw_write)


def s3_backend(server: MotoServer) -> Backend:
    bucket = f"blobs-{uuid.uuid4().hex[:16]}"
    client = server.client()
    client.create_bucket(Bucket=bucket)
    prefix = "tenant-files/uploads/"

    def raw_read(digest: str) -> bytes | None:
        try:
            return client.get_object(Bucket=bucket, Key=prefix + blob_key(digest))["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    def raw_write(digest: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=prefix + blob_key(digest), Body=data)

    url = f"s3://{bucket}/{prefix}?endpoint={server.endpoint_url}&region={REGION}"
    return Backend(url=url, raw_read=raw_read, raw_write=raw_write)


@pytest.fixture(params=["embedded", "s3"])
def backend(request, tmp_path: Path) -> Backend:
    if request.param == "s3":
        return s3_backend(request.getfixturevalue("moto_server"))
    return directory_backend(tmp_path / "blobs")


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[BlobStore]:
    adapter = build_blob_store(backend.url)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close()


# -- the contract ------------------------------------------------------------------------------


async def test_put_names_the_bytes_by_sha256_and_size(store: BlobStore, backend: Backend) -> None:
    data = b"%PDF-1.7 a document\n"
    ref = await store.put(data)
    assert ref == BlobRef(digest=hashlib.sha256(data).hexdigest(), size=len(data))
    assert backend.raw_read(ref.digest) == data  # at <prefix>sha256/ab/cdef...


async def test_get_returns_the_bytes_by_ref_or_by_digest(store: BlobStore) -> None:
    every_byte = bytes(range(256)) * 3
    ref = await store.put(every_byte)
    assert await store.get(ref) == every_byte
    assert await store.get(ref.digest) == every_byte
    assert await store.exists(ref) and await store.exists(ref.digest)


async def test_an_empty_blob_is_a_blob(store: BlobStore) -> None:
    ref = await store.put(b"")
    assert ref.size == 0
    assert await store.get(ref) == b""
    assert await store.exists(ref)


async def test_putting_the_same_bytes_twice_changes_nothing(store: BlobStore, backend: Backend) -> None:
    first = await store.put(b"same bytes")
    second = await store.put(b"same bytes")
    assert first == second
    assert await store.get(first) == b"same bytes"
    assert backend.raw_read(first.digest) == b"same bytes"


async def test_a_missing_blob_is_blob_not_found_naming_its_digest(store: BlobStore) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(BlobNotFound) as raised:
        await store.get(digest)
    assert raised.value.digest == digest
    assert isinstance(raised.value, NotFound)  # answers 404 through the API's one table
    assert not await store.exists(digest)


async def test_delete_removes_the_blob_and_may_be_repeated(store: BlobStore, backend: Backend) -> None:
    kept = await store.put(b"kept")
    erased = await store.put(b"erased")
    await store.delete(erased)
    assert not await store.exists(erased)
    assert backend.raw_read(erased.digest) is None
    with pytest.raises(BlobNotFound):
        await store.get(erased)
    await store.delete(erased)
    await store.delete(hashlib.sha256(b"never stored").hexdigest())
    assert await store.get(kept) == b"kept"


async def test_digests_lists_every_stored_blob_once(store: BlobStore) -> None:
    refs = [await store.put(b"listed %d" % index) for index in range(7)]
    await store.delete(refs[3])
    listed = [digest async for digest in store.digests()]
    assert sorted(listed) == sorted(ref.digest for index, ref in enumerate(refs) if index != 3)


async def test_head_reads_the_first_bytes_unverified(store: BlobStore, backend: Backend) -> None:
    ref = await store.put(b"TLSB header, then the rest")
    assert await store.head(ref, 4) == b"TLSB"
    assert await store.head(ref.digest, 1000) == b"TLSB header, then the rest"
    assert await store.head(await store.put(b""), 16) == b""
    backend.raw_write(ref.digest, b"TLSB altered")  # a header is read without the digest's check
    assert await store.head(ref, 4) == b"TLSB"
    with pytest.raises(BlobNotFound):
        await store.head(hashlib.sha256(b"never stored").hexdigest(), 4)


async def test_marks_list_by_owner_and_below_it(store: BlobStore) -> None:
    one, two, three = (hashlib.sha256(b"%d" % index).hexdigest() for index in range(3))
    await store.mark("org-a/user/u1", one)
    await store.mark("org-a/user/u1", one)  # twice is one mark
    await store.mark("org-a/user/u2", two)
    await store.mark("org-a/org", three)
    await store.mark("org-b/org", one)
    assert sorted([found async for found in store.marked("org-a/user/u1")]) == [("org-a/user/u1", one)]
    assert sorted([found async for found in store.marked("org-a")]) == sorted(
        [("org-a/user/u1", one), ("org-a/user/u2", two), ("org-a/org", three)]
    )
    assert [found async for found in store.marked("org-a/user")] != []
    assert [found async for found in store.marked("org-c")] == []
    assert [found async for found in store.marked("org")] == []  # a prefix of a segment is not a path above it
    await store.unmark("org-a/user/u2", two)
    await store.unmark("org-a/user/u2", two)  # not there any more: not an error
    assert sorted([found async for found in store.marked("org-a/user")]) == [("org-a/user/u1", one)]
    assert [digest async for digest in store.digests()] == []  # marks are not blobs


@pytest.mark.parametrize("owner", ["", "../x", "a//b", "A", "a/", "/a", "a b", "x" * 65, "/".join("a" * 9)])
async def test_a_malformed_owner_is_refused_before_touching_storage(store: BlobStore, owner: str) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    for call in (store.mark, store.unmark):
        with pytest.raises(ValueError, match="blob owner"):
            await call(owner, digest)
    with pytest.raises(ValueError, match="blob owner"):
        [found async for found in store.marked(owner)]
    with pytest.raises(ValueError, match="64 lowercase hex"):
        await store.mark("org-a", "../../etc")


async def test_a_deleted_blob_can_be_put_again(store: BlobStore) -> None:
    ref = await store.put(b"uploaded again after erasure")
    await store.delete(ref)
    assert await store.put(b"uploaded again after erasure") == ref
    assert await store.get(ref) == b"uploaded again after erasure"


async def test_blobs_outlive_the_store_that_wrote_them(store: BlobStore, backend: Backend) -> None:
    ref = await store.put(b"durable")
    reopened = build_blob_store(backend.url)
    await reopened.start()
    try:
        assert await reopened.get(ref) == b"durable"
    finally:
        await reopened.close()


async def test_bytes_altered_at_rest_are_reported_as_corrupted(store: BlobStore, backend: Backend) -> None:
    ref = await store.put(b"the original upload")
    backend.raw_write(ref.digest, b"the altered  upload")  # same size: only the digest can tell
    with pytest.raises(BlobCorrupted) as raised:
        await store.get(ref)
    assert raised.value.digest == ref.digest
    assert raised.value.actual_digest == hashlib.sha256(b"the altered  upload").hexdigest()


async def test_putting_again_repairs_a_truncated_copy(store: BlobStore, backend: Backend) -> None:
    ref = await store.put(b"a blob that lost its tail")
    backend.raw_write(ref.digest, b"a blob that")
    with pytest.raises(BlobCorrupted):
        await store.get(ref)
    assert await store.put(b"a blob that lost its tail") == ref
    assert await store.get(ref) == b"a blob that lost its tail"


async def test_concurrent_puts_of_the_same_and_different_bytes(store: BlobStore) -> None:
    contents = [b"blob %d" % (index % 5) for index in range(20)]
    refs = await asyncio.gather(*(store.put(content) for content in contents))
    assert [ref.digest for ref in refs] == [hashlib.sha256(content).hexdigest() for content in contents]
    for content, ref in zip(contents, refs):
        assert await store.get(ref) == content


async def test_a_large_blob_round_trips(store: BlobStore) -> None:
    data = os.urandom(6 * 1024 * 1024)
    ref = await store.put(data)
    assert ref.size == len(data)
    assert await store.get(ref) == data


@pytest.mark.parametrize("digest", ["../../etc/passwd", "A" * 64, "ab" * 31, "", "sha256:" + "a" * 64, "g" * 64])
async def test_a_malformed_digest_is_refused_before_touching_storage(store: BlobStore, digest: str) -> None:
    for call in (store.get, store.exists, store.delete):
        with pytest.raises(ValueError, match="64 lowercase hex"):
            await call(digest)


async def test_a_store_must_be_started(backend: Backend) -> None:
    unstarted = build_blob_store(backend.url)
    with pytest.raises(RuntimeError, match="not started"):
        await unstarted.put(b"too early")


def test_a_blob_ref_holds_only_a_sha256_digest_and_a_size() -> None:
    assert BlobRef.of(b"abc") == BlobRef(
        digest="ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", size=3
    )
    with pytest.raises(ValueError):
        BlobRef(digest="../x", size=1)
    with pytest.raises(ValueError):
        BlobRef(digest="a" * 64, size=-1)


# -- the embedded adapter ------------------------------------------------------------------------


async def test_embedded_layout_is_sha256_shard_then_rest(tmp_path: Path) -> None:
    store = DirectoryBlobStore(root=tmp_path)
    await store.start()
    ref = await store.put(b"abc")
    assert (tmp_path / "sha256" / "ba" / "7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad").read_bytes() == b"abc"
    assert sorted(path.name for path in (tmp_path / "sha256" / "ba").iterdir()) == [ref.digest[2:]]  # no temp files


async def test_embedded_put_of_stored_bytes_does_not_rewrite_the_file(tmp_path: Path) -> None:
    store = DirectoryBlobStore(root=tmp_path)
    await store.start()
    ref = await store.put(b"written once")
    path = tmp_path / blob_key(ref.digest)
    before = path.stat()
    await store.put(b"written once")
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


async def test_embedded_failed_write_leaves_neither_blob_nor_temp_file(tmp_path: Path, monkeypatch) -> None:
    store = DirectoryBlobStore(root=tmp_path)
    await store.start()

    def disk_full(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        await store.put(b"never lands")
    monkeypatch.undo()
    assert not await store.exists(BlobRef.of(b"never lands"))
    assert [path for path in (tmp_path / "sha256").rglob("*") if path.is_file()] == []


async def test_embedded_crash_before_rename_leaves_no_blob_and_restart_sweeps_the_temp_file(tmp_path: Path) -> None:
    # A real process dies between writing its temp file and renaming it (os._exit: no cleanup runs).
    crash = textwrap.dedent(
        f"""
        import asyncio, os
        from pathlib import Path
        from events.blobs import DirectoryBlobStore
        os.replace = lambda source, destination: os._exit(9)
        async def main():
            store = DirectoryBlobStore(root=Path({str(tmp_path)!r}))
            await store.start()
            await store.put(b"half written")
        asyncio.run(main())
        """
    )
    finished = subprocess.run([sys.executable, "-c", crash], cwd=Path(__file__).parents[2], capture_output=True)
    assert finished.returncode == 9, finished.stderr.decode()
    ref = BlobRef.of(b"half written")
    [temp] = (tmp_path / "sha256" / ref.digest[:2]).iterdir()
    assert temp.name.startswith(".tmp-") and temp.read_bytes() == b"half written"
    assert not (tmp_path / blob_key(ref.digest)).exists()

    restarted = DirectoryBlobStore(root=tmp_path)
    await restarted.start()
    assert temp.exists()  # young: it may belong to a writer that is still running
    an_hour_and_more_ago = time.time() - 3700
    os.utime(temp, (an_hour_and_more_ago, an_hour_and_more_ago))
    await restarted.start()
    assert not temp.exists()
    with pytest.raises(BlobNotFound):
        await restarted.get(ref)


# -- the S3 adapter ------------------------------------------------------------------------------


async def test_s3_missing_bucket_fails_start(moto_server: MotoServer) -> None:
    store = build_blob_store(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}?endpoint={moto_server.endpoint_url}")
    with pytest.raises(BlobStoreUnavailable, match="does not exist"):
        await store.start()


async def test_s3_unreachable_endpoint_is_unavailable(moto_server: MotoServer) -> None:
    location = S3Location(bucket="turnlog-blobs", endpoint_url=f"http://127.0.0.1:{free_port()}", region=REGION)
    store = S3BlobStore(location=location, max_attempts=1, connect_timeout_s=1)
    with pytest.raises(BlobStoreUnavailable) as raised:
        await store.start()
    assert isinstance(raised.value, Unavailable)  # 503 through the API's one table


async def test_s3_blobs_under_another_prefix_are_invisible(moto_server: MotoServer) -> None:
    bucket = f"blobs-{uuid.uuid4().hex[:16]}"
    moto_server.client().create_bucket(Bucket=bucket)
    first = build_blob_store(f"s3://{bucket}/one?endpoint={moto_server.endpoint_url}&region={REGION}")
    second = build_blob_store(f"s3://{bucket}/two?endpoint={moto_server.endpoint_url}&region={REGION}")
    await first.start()
    await second.start()
    try:
        ref = await first.put(b"only under one/")
        assert await first.exists(ref)
        assert not await second.exists(ref)
    finally:
        await first.close()
        await second.close()


# -- choosing an adapter by URL --------------------------------------------------------------------


async def test_s3_digests_reads_every_page_and_only_its_prefix(moto_server: MotoServer) -> None:
    bucket = f"blobs-{uuid.uuid4().hex[:16]}"
    moto_server.client().create_bucket(Bucket=bucket)
    location = S3Location(bucket=bucket, prefix="one/", endpoint_url=moto_server.endpoint_url, region=REGION)
    listed = S3BlobStore(location=location, list_page_size=2)
    beside = build_blob_store(f"s3://{bucket}/two?endpoint={moto_server.endpoint_url}&region={REGION}")
    await listed.start()
    await beside.start()
    try:
        refs = [await listed.put(b"paged %d" % index) for index in range(5)]
        await beside.put(b"under another prefix")
        assert sorted([digest async for digest in listed.digests()]) == sorted(ref.digest for ref in refs)
    finally:
        await listed.close()
        await beside.close()


async def test_s3_marked_reads_every_page(moto_server: MotoServer) -> None:
    bucket = f"blobs-{uuid.uuid4().hex[:16]}"
    moto_server.client().create_bucket(Bucket=bucket)
    location = S3Location(bucket=bucket, prefix="one/", endpoint_url=moto_server.endpoint_url, region=REGION)
    listed = S3BlobStore(location=location, list_page_size=2)
    await listed.start()
    try:
        digests = [hashlib.sha256(b"%d" % index).hexdigest() for index in range(5)]
        for digest in digests:
            await listed.mark("org-a/user/u1", digest)
        assert sorted([digest async for _, digest in listed.marked("org-a")]) == sorted(digests)
    finally:
        await listed.close()


def test_build_blob_store_picks_the_adapter_by_scheme(tmp_path: Path) -> None:
    assert isinstance(build_blob_store(tmp_path.as_uri()), DirectoryBlobStore)
    assert isinstance(build_blob_store(str(tmp_path / "blobs")), DirectoryBlobStore)
    assert isinstance(build_blob_store("relative/blobs"), DirectoryBlobStore)
    s3 = build_blob_store("s3://turnlog-blobs/uploads?endpoint=http://127.0.0.1:9000&region=eu-west-1")
    assert isinstance(s3, S3BlobStore)
    assert s3.location == S3Location(
        bucket="turnlog-blobs", prefix="uploads/", endpoint_url="http://127.0.0.1:9000", region="eu-west-1"
    )
    for unsupported in ("", "http://example.com/blobs", "file://otherhost/blobs", "file:///x?y=1"):
        with pytest.raises(ValueError):
            build_blob_store(unsupported)


async def test_a_file_url_and_a_plain_path_name_the_same_store(tmp_path: Path) -> None:
    by_url = build_blob_store((tmp_path / "a dir").as_uri())  # percent-encoded space
    by_path = build_blob_store(str(tmp_path / "a dir"))
    await by_url.start()
    await by_path.start()
    ref = await by_url.put(b"one directory")
    assert await by_path.get(ref) == b"one directory"


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://turnlog-blobs") == S3Location(bucket="turnlog-blobs")
    assert parse_s3_url("s3://turnlog-blobs/") == S3Location(bucket="turnlog-blobs")
    assert parse_s3_url("s3://turnlog-blobs//a/b//") == S3Location(bucket="turnlog-blobs", prefix="a/b/")
    assert parse_s3_url("s3://turnlog-blobs?region=us-east-1").region == "us-east-1"
    refused = [
        "s3://",
        "s3://Upper-Case",
        "s3://ab",
        "s3://key:secret@bucket-name",
        "s3://bucket-name:9000",
        "s3://bucket-name?endpont=http://x",
        "s3://bucket-name?endpoint=ftp://x",
        "s3://bucket-name?region=a&region=b",
        "s3://bucket-name?garbage",
        "file:///tmp",
    ]
    for url in refused:
        with pytest.raises(ValueError):
            parse_s3_url(url)
