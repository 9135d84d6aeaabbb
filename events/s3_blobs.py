"""The S3 blob store: the `BlobStore` port on S3 or an S3-compatible server (MinIO), via boto3.

Objects live at `<prefix>sha256/ab/cdef...` (and empty marks at `<prefix>marks/<owner>/<digest>`) in one bucket,
the embedded adapter's layout. boto3 is blocking, so every call runs on a worker thread (`asyncio.to_thread`); a
boto3 client is thread-safe. Credentials come from the standard AWS chain (environment, shared config files,
instance roles), never from the URL, so a URL can be logged. Uploads carry their SHA-256, which S3 checks on arrival;
reads are checked again here.
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from events.aws_urls import url_options
from events.blobs import (
    BlobNotFound, BlobRef, BlobStoreUnavailable, blob_key, check_digest, check_owner, digest_of, mark_key, verified,
)

__all__ = ["S3BlobStore", "S3Location", "parse_s3_url"]

# S3's own rule for bucket names (3 to 63 lowercase letters, digits, dots and hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_URL_OPTIONS = frozenset({"endpoint", "region"})
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class _Missing(Exception):
    """S3 answered 404 for a key (or, for `head_bucket`, the bucket)."""


@dataclass(frozen=True, kw_only=True)
class S3Location:
    """Where blobs live: a bucket, a key prefix (empty or ending in `/`), and the server if not AWS."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None


def parse_s3_url(url: str) -> S3Location:
    """`s3://bucket[/prefix][?endpoint=http://host:9000&region=us-east-1]`.

    Without `endpoint` the client talks to AWS. Unknown options are refused rather than ignored,
    so a misspelt one never goes unnoticed.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"an S3 blob store URL starts with s3://, got {url!r}")
    if parts.username is not None or parts.password is not None or parts.port is not None:
        raise ValueError(f"an S3 URL names a bucket, not a host (credentials come from the AWS chain), got {url!r}")
    bucket = parts.netloc  # not .hostname, which lowercases: S3 would refuse the name we were given
    if _BUCKET.fullmatch(bucket) is None or ".." in bucket:
        raise ValueError(f"an S3 URL starts with a valid bucket name (s3://bucket/prefix), got {url!r}")
    options = url_options(url, allowed=_URL_OPTIONS, what="S3")
    prefix = unquote(parts.path).strip("/")
    return S3Location(
        bucket=bucket,
        prefix=f"{prefix}/" if prefix else "",
        endpoint_url=options.get("endpoint") or None,
        region=options.get("region") or None,
    )


class S3BlobStore:
    """The `BlobStore` port on one S3 bucket; see the module docstring."""

    def __init__(
        self,
        *,
        location: S3Location,
        max_attempts: int = 3,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        list_page_size: int = 1000,  # S3's own most per listing request
    ) -> None:
        self._location = location
        self._list_page_size = list_page_size
        self._config = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # S3-compatible servers (MinIO) are addressed by path; AWS itself picks its own style.
            s3={"addressing_style": "path" if location.endpoint_url else "auto"},
        )
        self._client: Any = None

    @property
    def location(self) -> S3Location:
        return self._location

    async def start(self) -> None:
        self._client = await asyncio.to_thread(self._connect)
        try:
            await self._call(self._client.head_bucket, Bucket=self._location.bucket)
        except _Missing:
            await self.close()
            raise BlobStoreUnavailable(detail=f"the S3 bucket {self._location.bucket!r} does not exist") from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def put(self, data: bytes) -> BlobRef:
        ref = await asyncio.to_thread(BlobRef.of, bytes(data))
        key = self._key(ref.digest)
        try:
            head = await self._call(self._started().head_object, Bucket=self._location.bucket, Key=key)
        except _Missing:
            head = None
        if head is not None and head.get("ContentLength") == ref.size:
            return ref  # already stored; a size mismatch means a damaged copy, which we replace
        await self._call(
            self._started().put_object,
            Bucket=self._location.bucket,
            Key=key,
            Body=data,
            ContentType="application/octet-stream",
            ChecksumSHA256=base64.b64encode(bytes.fromhex(ref.digest)).decode("ascii"),
        )
        return ref

    async def get(self, blob: BlobRef | str) -> bytes:
        digest = digest_of(blob)
        client = self._started()

        def read() -> bytes:
            response = client.get_object(Bucket=self._location.bucket, Key=self._key(digest))
            body = response["Body"]
            try:
                return body.read()
            finally:
                body.close()

        try:
            data = await self._call(read)
        except _Missing:
            raise BlobNotFound(digest=digest) from None
        return verified(digest, data)

    async def exists(self, blob: BlobRef | str) -> bool:
        key = self._key(digest_of(blob))
        try:
            await self._call(self._started().head_object, Bucket=self._location.bucket, Key=key)
        except _Missing:
            return False
        return True

    async def delete(self, blob: BlobRef | str) -> None:
        key = self._key(digest_of(blob))
        await self._call(self._started().delete_object, Bucket=self._location.bucket, Key=key)

    async def digests(self) -> AsyncIterator[str]:
        prefix = f"{self._location.prefix}sha256/"
        async for key in self._keys_under(prefix):
            try:
                yield check_digest(key[len(prefix):].replace("/", ""))
            except ValueError:
                continue  # not a blob of this layout

    async def head(self, blob: BlobRef | str, size: int) -> bytes:
        digest = digest_of(blob)
        client = self._started()

        def read() -> bytes:
            try:
                response = client.get_object(
                    Bucket=self._location.bucket, Key=self._key(digest), Range=f"bytes=0-{max(size, 1) - 1}"
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # an empty object has no byte 0
                raise
            body = response["Body"]
            try:
                return body.read()[:size]
            finally:
                body.close()

        try:
            return await self._call(read)
        except _Missing:
            raise BlobNotFound(digest=digest) from None

    async def mark(self, owner: str, digest: str) -> None:
        key = f"{self._location.prefix}{mark_key(owner, digest)}"
        await self._call(self._started().put_object, Bucket=self._location.bucket, Key=key, Body=b"")

    async def unmark(self, owner: str, digest: str) -> None:
        key = f"{self._location.prefix}{mark_key(owner, digest)}"
        await self._call(self._started().delete_object, Bucket=self._location.bucket, Key=key)

    async def marked(self, owner: str) -> AsyncIterator[tuple[str, str]]:
        top = f"{self._location.prefix}marks/"
        async for key in self._keys_under(f"{top}{check_owner(owner)}/"):
            found, _, digest = key[len(top):].rpartition("/")
            try:
                yield check_owner(found), check_digest(digest)
            except ValueError:
                continue  # not a mark of this layout

    # -- internals ---------------------------------------------------------------------------

    async def _keys_under(self, prefix: str) -> AsyncIterator[str]:
        """Every key that starts with `prefix`, a page of `list_page_size` at a time."""
        arguments = {"Bucket": self._location.bucket, "Prefix": prefix, "MaxKeys": self._list_page_size}
        while True:
            page = await self._call(self._started().list_objects_v2, **arguments)
            for entry in page.get("Contents", ()):
                yield entry["Key"]
            if not page.get("IsTruncated"):
                return
            arguments["ContinuationToken"] = page["NextContinuationToken"]

    def _connect(self) -> Any:
        session = boto3.session.Session()  # sessions are not thread-safe: one of its own, used here only
        return session.client(
            "s3",
            endpoint_url=self._location.endpoint_url,
            region_name=self._location.region,
            config=self._config,
        )

    def _key(self, digest: str) -> str:
        return f"{self._location.prefix}{blob_key(digest)}"

    def _started(self) -> Any:
        if self._client is None:
            raise RuntimeError("the blob store is not started")
        return self._client

    async def _call(self, function: Any, /, **arguments: Any) -> Any:
        """Run one blocking boto3 call on a thread: a 404 becomes `_Missing`, any other failure `BlobStoreUnavailable`."""
        try:
            return await asyncio.to_thread(function, **arguments)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise _Missing() from None
            raise BlobStoreUnavailable(detail=f"the S3 bucket {self._location.bucket!r} refused the request: {code}") from error
        except BotoCoreError as error:
            raise BlobStoreUnavailable(detail=f"the S3 blob store cannot be reached: {error}") from error
