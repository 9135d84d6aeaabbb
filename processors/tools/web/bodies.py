"""A response body collected as it arrives, decompressed within a byte cap, pure (no I/O).

The cap counts decoded bytes and decompression never produces more than the room left under it, so
a small gzip body that would inflate to gigabytes (a "zip bomb") is stopped at the cap, as is a plain
body that never ends.
"""

from __future__ import annotations

import zlib


class BodyTooLarge(Exception):
    """The body passed `max_bytes` (decoded)."""

    def __init__(self, *, max_bytes: int) -> None:
        super().__init__(f"larger than {max_bytes:,} bytes")
        self.max_bytes = max_bytes


class UnsupportedEncoding(Exception):
    """A `Content-Encoding` the fetcher does not decode (it asks for gzip or deflate only)."""

    def __init__(self, *, encoding: str) -> None:
        super().__init__(f"content encoding {encoding!r} is not gzip or deflate")
        self.encoding = encoding


class CappedBody:
    """Feed it the raw chunks of a body; `content()` is the decoded body; `BodyTooLarge` as soon as it passes the cap."""

    def __init__(self, *, content_encoding: str, max_bytes: int) -> None:
        encoding = content_encoding.strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise UnsupportedEncoding(encoding=encoding)
        self._encoding = encoding
        self._max_bytes = max_bytes
        self._decompressor: zlib._Decompress | None = None
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        if self._encoding in ("", "identity"):
            self._keep(chunk)
            return
        decompressor = self._decompressor or self._start(chunk)
        pending = chunk
        while pending:
            # Never more output than one byte past the cap: that byte is what proves the body too large.
            self._keep(decompressor.decompress(pending, self._max_bytes - self._size + 1))
            pending = decompressor.unconsumed_tail

    def content(self) -> bytes:
        if self._decompressor is not None:
            self._keep(self._decompressor.flush())
        return b"".join(self._parts)

    def _start(self, first: bytes) -> zlib._Decompress:
        if self._encoding in ("gzip", "x-gzip"):
            wbits = 16 + zlib.MAX_WBITS
        else:
            # `deflate` should be zlib-wrapped (RFC 9110), but some servers send the raw stream: a zlib
            # stream's first byte is 0x?8 with a header checksum that divides by 31.
            wrapped = len(first) >= 2 and first[0] & 0x0F == 8 and int.from_bytes(first[:2], "big") % 31 == 0
            wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
        self._decompressor = zlib.decompressobj(wbits)
        return self._decompressor

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max_bytes:
            raise BodyTooLarge(max_bytes=self._max_bytes)
        if data:
            self._parts.append(data)
