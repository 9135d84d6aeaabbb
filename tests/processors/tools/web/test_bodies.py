"""A response body read within a byte cap, pure: plain, gzip and deflate, and a gzip bomb stopped at the cap."""

from __future__ import annotations

import gzip
import zlib

import pytest

from processors.tools.web.bodies import BodyTooLarge, CappedBody, UnsupportedEncoding


def chunks(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def read(data: bytes, *, encoding: str, max_bytes: int) -> bytes:
    body = CappedBody(content_encoding=encoding, max_bytes=max_bytes)
    for chunk in chunks(data):
        body.feed(chunk)
    return body.content()


PAGE = b"<html><body>" + b"<p>The moon raises the tides.</p>" * 300 + b"</body></html>"


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        ("", PAGE),
        ("identity", PAGE),
        ("gzip", gzip.compress(PAGE)),
        ("x-gzip", gzip.compress(PAGE)),
        ("GZIP ", gzip.compress(PAGE)),
        ("deflate", zlib.compress(PAGE)),  # zlib-wrapped, as RFC 9110 says
        ("deflate", zlib.compress(PAGE, wbits=-zlib.MAX_WBITS)),  # the raw stream some servers send
    ],
)
def test_a_body_within_the_cap_is_decoded_whole(encoding: str, encoded: bytes) -> None:
    assert read(encoded, encoding=encoding, max_bytes=len(PAGE)) == PAGE


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate"])
def test_one_byte_past_the_cap_is_too_large(encoding: str) -> None:
    encoded = {"identity": PAGE, "gzip": gzip.compress(PAGE), "deflate": zlib.compress(PAGE)}[encoding]
    with pytest.raises(BodyTooLarge, match="larger than"):
        read(encoded, encoding=encoding, max_bytes=len(PAGE) - 1)


def test_a_gzip_bomb_is_stopped_at_the_cap_without_inflating_it() -> None:
    bomb = gzip.compress(b" " * (256 * 1024 * 1024), compresslevel=9)  # 256 MiB in about 250 kB
    body = CappedBody(content_encoding="gzip", max_bytes=1024 * 1024)
    kept = 0
    with pytest.raises(BodyTooLarge):
        for chunk in chunks(bomb, 65536):
            body.feed(chunk)
            kept = body._size
    assert kept <= 1024 * 1024  # never more than the cap was held, whatever one chunk would inflate to


def test_encodings_it_did_not_ask_for_are_refused() -> None:
    for encoding in ("br", "zstd", "gzip, gzip", "compress"):
        with pytest.raises(UnsupportedEncoding):
            CappedBody(content_encoding=encoding, max_bytes=100)


def test_damaged_compressed_data_raises_zlibs_error() -> None:
    body = CappedBody(content_encoding="gzip", max_bytes=100_000)
    with pytest.raises(zlib.error):
        body.feed(b"\x1f\x8b\x08\x00garbage that is not deflate data at all")
