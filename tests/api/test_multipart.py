"""The streaming multipart/form-data decoder, on bodies that httpx (a real client) encodes, split anywhere."""

from __future__ import annotations

import os

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.multipart import (
    MalformedMultipart,
    MultipartDecoder,
    PartData,
    PartEnded,
    PartStarted,
    boundary_of,
    read_multipart_form,
    size_text,
)
from kernel.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType


def encoded(*, files: dict, data: dict | None = None) -> tuple[str, bytes]:
    """What httpx sends for this form: its boundary and its body."""
    request = httpx.Request("POST", "http://testserver/v1/files", files=files, data=data or {})
    return boundary_of(request.headers["content-type"]), request.read()


def decode(boundary: str, body: bytes, cuts: list[int]) -> list[tuple[str, str | None, str | None, bytes]]:
    """(name, filename, content type, bytes) of every part, feeding the body in pieces cut at `cuts`."""
    decoder = MultipartDecoder(boundary)
    events = []
    positions = [0, *sorted(cut % (len(body) + 1) for cut in cuts), len(body)]
    for start, end in zip(positions, positions[1:]):
        events += decoder.feed(body[start:end])
    decoder.finish()
    parts: list[tuple[str, str | None, str | None, bytes]] = []
    open_part = None
    for event in events:
        match event:
            case PartStarted(headers=headers):
                assert open_part is None
                open_part = [headers.name, headers.filename, headers.content_type, b""]
            case PartData(data=data):
                assert open_part is not None and data
                open_part[3] += data
            case PartEnded():
                assert open_part is not None
                parts.append(tuple(open_part))
                open_part = None
    assert open_part is None
    return parts


# Bytes that look like boundaries, CRLFs and dashes are the hard case for a boundary search.
TRICKY_BYTES = st.binary(max_size=3000) | st.lists(
    st.sampled_from([b"\r\n", b"--", b"\r\n--", b"-", b"\r", b"\n", b"x", b"\x00\xff"]), max_size=400
).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(
    content=TRICKY_BYTES,
    workspace=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_body_split_anywhere_decodes_to_the_parts_sent(content: bytes, workspace: str, cuts: list[int]) -> None:
    boundary, body = encoded(
        files={"file": ("réport 2026.pdf", content, "application/pdf")}, data={"workspaceId": workspace, "acl": "owner"}
    )
    parts = decode(boundary, body, cuts)
    assert parts == [
        ("workspaceId", None, None, workspace.encode()),
        ("acl", None, None, b"owner"),
        ("file", "réport 2026.pdf", "application/pdf", content),
    ]


def test_a_part_without_headers_a_preamble_padding_and_an_epilogue_are_read_per_rfc_2046() -> None:
    body = (
        b"this preamble is ignored\r\n"
        b"--XyZ \t\r\n"  # transport padding after the boundary
        b'Content-Disposition: form-data; name="a"\r\n\r\n'
        b"one\r\n--XyZ\r\n"
        b'Content-Disposition: form-data; name="b"; filename="C:\\fakepath\\q.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n"
        b"two\r\n--XyZ--\r\nand this epilogue too"
    )
    assert decode("XyZ", body, [7, 30, 31, 90]) == [
        ("a", None, None, b"one"),
        ("b", "C:\\fakepath\\q.txt", "text/plain", b"two"),
    ]


def test_extended_and_escaped_file_names_are_decoded() -> None:
    body = (
        b"--b\r\n"
        b"Content-Disposition: form-data; name=\"file\"; filename=\"fallback.pdf\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A.pdf\r\n\r\n"
        b"x\r\n--b\r\n"
        b'Content-Disposition: form-data; name="other"; filename="say %22hi%22.txt"\r\n\r\n'
        b"y\r\n--b--"
    )
    assert [(name, filename) for name, filename, _, _ in decode("b", body, [])] == [
        ("file", "报告.pdf"),
        ("other", 'say "hi".txt'),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end", "ended before its closing boundary"),
        (b"no boundary at all", "ended before its closing boundary"),
        (b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", "Content-Disposition"),
        (b"--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b--", "Content-Disposition"),
        (b"--b\r\nno colon here\r\n\r\nx\r\n--b--", "malformed header"),
        (b"--bgarbage\r\n\r\n--b--", "followed by garbage"),
        (b"--b\r\n" + b"X-Long: " + b"h" * 9000 + b"\r\n\r\n--b--", "headers exceed"),
    ],
)
def test_malformed_bodies_are_400s_that_say_why(body: bytes, message: str) -> None:
    with pytest.raises(MalformedMultipart, match=message):
        decode("b", body, [3, 20])


def test_a_form_with_too_many_parts_is_refused() -> None:
    part = b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n'
    with pytest.raises(MalformedMultipart, match="at most 32 parts"):
        MultipartDecoder("b").feed(part * 33 + b"--b--")


@pytest.mark.parametrize(
    ("content_type", "error"),
    [
        ("application/json", UnsupportedMediaType),
        (None, UnsupportedMediaType),
        ("multipart/form-data", MalformedMultipart),
        ("multipart/form-data; boundary=" + "b" * 71, MalformedMultipart),
    ],
)
def test_only_multipart_form_data_with_a_boundary_is_accepted(content_type: str | None, error: type) -> None:
    with pytest.raises(error):
        boundary_of(content_type)
    assert boundary_of('multipart/form-data; charset=utf-8; boundary="a b:c"') == "a b:c"


async def chunks_of(body: bytes, size: int = 4096):
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_the_form_reader_collects_fields_and_the_file() -> None:
    content = os.urandom(50_000)
    boundary, body = encoded(files={"file": ("a.bin", content)}, data={"workspaceId": "ws_1"})
    form = await read_multipart_form(
        chunks_of(body), boundary=boundary, file_fields={"file"}, text_fields={"workspaceId", "acl"}, max_file_bytes=50_000
    )
    assert form.fields == {"workspaceId": "ws_1"}
    assert form.files["file"].filename == "a.bin" and form.files["file"].data == content


async def test_the_form_reader_stops_reading_once_the_file_passes_its_limit() -> None:
    boundary, body = encoded(files={"file": ("big.bin", b"z" * 200_000)})
    read: list[int] = []

    async def counted():
        async for chunk in chunks_of(body):
            read.append(len(chunk))
            yield chunk

    with pytest.raises(PayloadTooLarge, match="larger than the upload limit of 97.7 KiB") as raised:
        await read_multipart_form(counted(), boundary=boundary, file_fields={"file"}, text_fields=(), max_file_bytes=100_000)
    assert raised.value.max_bytes == 100_000
    assert sum(read) <= 100_000 + 2 * 4096  # it stopped within a chunk or two of the limit


@pytest.mark.parametrize(
    ("files", "data", "message"),
    [
        ({"file": ("a.txt", b"x")}, {"colour": "blue"}, "unknown form field 'colour'"),
        ({"file": ("a.txt", b"x"), "workspaceId": ("w.txt", b"ws")}, {}, "must be text, not a file"),
        ({"file": (None, b"not a file")}, {}, "must be a file"),
        ({"file": ("a.txt", b"x")}, {"workspaceId": "w" * 2000}, "longer than 1024 bytes"),
        ({"file": ("a.txt", b"x")}, {"workspaceId": ["a", "b"]}, "given twice"),
    ],
)
async def test_unknown_repeated_or_misplaced_fields_are_400s(files: dict, data: dict, message: str) -> None:
    boundary, body = encoded(files=files, data=data)
    with pytest.raises(InvalidRequest, match=message):
        await read_multipart_form(
            chunks_of(body), boundary=boundary, file_fields={"file"}, text_fields={"workspaceId"}, max_file_bytes=1000
        )


def test_sizes_read_like_a_person_writes_them() -> None:
    assert [size_text(n) for n in (300, 1024, 1536, 25 << 20, 3 << 30)] == ["300 bytes", "1 KiB", "1.5 KiB", "25 MiB", "3 GiB"]
