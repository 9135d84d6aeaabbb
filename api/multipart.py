"""multipart/form-data (RFC 7578) read as a stream: a pure decoder of parts under a capped reader of one request.

`MultipartDecoder` turns bytes, fed in chunks of any size, into `PartStarted`, `PartData` and
`PartEnded` events, holding back only what might be the start of a boundary. `read_multipart_form`
drives it from a request's body stream and keeps at most the limits it is given: it stops reading
as soon as a file passes its cap, so an oversized upload costs no more memory than the cap.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

from kernel.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = [
    "MalformedMultipart",
    "MultipartDecoder",
    "MultipartForm",
    "PartData",
    "PartEnded",
    "PartHeaders",
    "PartStarted",
    "UploadedFile",
    "boundary_of",
    "read_multipart_form",
    "size_text",
]

# RFC 2046: 1-70 characters from this set, not ending in a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
MAX_HEADER_BYTES = 8 * 1024
MAX_PARTS = 32


class MalformedMultipart(InvalidRequest):
    """The body is not well-formed multipart/form-data (400)."""


@dataclass(frozen=True, kw_only=True)
class PartHeaders:
    """What a part's headers say: its form field name, and for a file its name and declared type."""

    name: str
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True, kw_only=True)
class PartStarted:
    headers: PartHeaders


@dataclass(frozen=True, kw_only=True)
class PartData:
    data: bytes


@dataclass(frozen=True, kw_only=True)
class PartEnded:
    pass


MultipartEvent = PartStarted | PartData | PartEnded


def boundary_of(content_type: str | None) -> str:
    """The boundary of a `multipart/form-data` Content-Type; 415 for any other type, 400 without a usable boundary."""
    media_type, parameters = _parse_header_value(content_type or "")
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType(
            detail=f"upload a file as multipart/form-data (a `file` part), not {media_type or 'a body without a Content-Type'}"
        )
    boundary = parameters.get("boundary")
    if boundary is None or not _BOUNDARY.fullmatch(boundary):
        raise MalformedMultipart(detail="the multipart/form-data Content-Type needs a boundary of 1-70 characters")
    return boundary


class MultipartDecoder:
    """A push parser of one multipart body: `feed` bytes as they arrive, then `finish`."""

    def __init__(self, boundary: str, *, max_header_bytes: int = MAX_HEADER_BYTES, max_parts: int = MAX_PARTS) -> None:
        # Every delimiter follows a CRLF; pretending one came before the body finds the first one too.
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        self._buffer = bytearray(b"\r\n")
        self._state = "preamble"
        self._max_header_bytes = max_header_bytes
        self._max_parts = max_parts
        self._parts = 0

    def feed(self, data: bytes) -> list[MultipartEvent]:
        self._buffer += data
        return list(self._events())

    def finish(self) -> None:
        """The body ended: it must have ended with the closing delimiter."""
        if self._state != "epilogue":
            raise MalformedMultipart(detail="the multipart body ended before its closing boundary")

    def _events(self) -> Iterator[MultipartEvent]:
        buffer = self._buffer
        while True:
            if self._state == "preamble":
                found = buffer.find(self._delimiter)
                if found < 0:
                    del buffer[: max(0, len(buffer) - len(self._delimiter) + 1)]  # the preamble means nothing
                    return
                del buffer[: found + len(self._delimiter)]
                self._state = "delimiter"
            elif self._state == "delimiter":
                if len(buffer) < 2:
                    return
                if buffer[:2] == b"--":
                    self._state = "epilogue"
                    continue
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    if len(buffer) > self._max_header_bytes:
                        raise MalformedMultipart(detail="a multipart boundary is followed by garbage")
                    return
                if buffer[:line_end].strip(b" \t"):
                    raise MalformedMultipart(detail="a multipart boundary is followed by garbage")
                del buffer[: line_end + 2]
                self._state = "headers"
            elif self._state == "headers":
                if buffer[:2] == b"\r\n":
                    block, consumed = b"", 2
                else:
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buffer) > self._max_header_bytes:
                            raise MalformedMultipart(detail=f"a part's headers exceed {self._max_header_bytes} bytes")
                        return
                    block, consumed = bytes(buffer[:end]), end + 4
                if consumed - 4 > self._max_header_bytes:
                    raise MalformedMultipart(detail=f"a part's headers exceed {self._max_header_bytes} bytes")
                self._parts += 1
                if self._parts > self._max_parts:
                    raise MalformedMultipart(detail=f"a form may have at most {self._max_parts} parts")
                del buffer[:consumed]
                self._state = "body"
                yield PartStarted(headers=_part_headers(block))
            elif self._state == "body":
                found = buffer.find(self._delimiter)
                if found < 0:
                    # Whatever could still be the start of a delimiter stays for the next feed.
                    keep = len(self._delimiter) - 1
                    if len(buffer) > keep:
                        yield PartData(data=bytes(buffer[: len(buffer) - keep]))
                        del buffer[: len(buffer) - keep]
                    return
                if found:
                    yield PartData(data=bytes(buffer[:found]))
                del buffer[: found + len(self._delimiter)]
                self._state = "delimiter"
                yield PartEnded()
            else:  # epilogue: ignored, as RFC 2046 says
                buffer.clear()
                return


def _part_headers(block: bytes) -> PartHeaders:
    headers: dict[str, str] = {}
    for line in _header_lines(block):
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise MalformedMultipart(detail=f"a part has a malformed header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    disposition, parameters = _parse_header_value(headers.get("content-disposition", ""))
    if disposition != "form-data" or "name" not in parameters:
        raise MalformedMultipart(detail='every part needs a header `Content-Disposition: form-data; name="..."`')
    filename = parameters.get("filename*")
    if filename is not None:
        filename = _extended_value(filename)
    if filename is None:
        filename = parameters.get("filename")
    return PartHeaders(
        name=_unescape_form_name(parameters["name"]),
        filename=None if filename is None else _unescape_form_name(filename),
        content_type=headers.get("content-type") or None,
    )


def _header_lines(block: bytes) -> list[str]:
    # Browsers send names and file names as raw UTF-8; anything else is read as Latin-1 rather than refused.
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    lines: list[str] = []
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()  # obsolete line folding
        elif line:
            lines.append(line)
    return lines


_PARAMETER = re.compile(
    r';\s*(?P<name>[^\s=;]+)\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<token>[^;]*))', re.DOTALL
)


def _parse_header_value(value: str) -> tuple[str, dict[str, str]]:
    """`form-data; name="file"; filename="a.pdf"` -> ("form-data", {"name": "file", "filename": "a.pdf"})."""
    main, _, rest = value.partition(";")
    parameters: dict[str, str] = {}
    for match in _PARAMETER.finditer(";" + rest):
        quoted = match.group("quoted")
        # A backslash escapes only a quote or a backslash: a Windows path keeps its separators.
        raw = re.sub(r'\\(["\\])', r"\1", quoted) if quoted is not None else match.group("token").strip()
        parameters.setdefault(match.group("name").lower(), raw)
    return main.strip().lower(), parameters


def _extended_value(value: str) -> str | None:
    """RFC 5987 `UTF-8''Quarterly%20report.pdf`; None when it cannot be read."""
    charset, quote, rest = value.partition("'")
    _, quote2, encoded = rest.partition("'")
    if not quote or not quote2:
        return None
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeDecodeError):
        return None


def _unescape_form_name(value: str) -> str:
    # The HTML standard's encoding of field and file names: these three are percent-encoded.
    return value.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


# -- reading a request ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class UploadedFile:
    filename: str
    content_type: str | None
    data: bytes


@dataclass(frozen=True, kw_only=True)
class MultipartForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)


def size_text(size: int) -> str:
    """A byte count as a person reads it: `25 MiB`, `512 KiB`, `1.5 MiB`, `300 bytes`."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


async def read_multipart_form(
    chunks: AsyncIterator[bytes],
    *,
    boundary: str,
    file_fields: Collection[str],
    text_fields: Collection[str],
    max_file_bytes: int,
    max_text_bytes: int = 1024,
) -> MultipartForm:
    """Every part of a form, decoded as it streams in; stops reading (413) as soon as a file passes `max_file_bytes`.

    Unknown, repeated or misplaced fields are a 400 naming them, like unknown JSON fields.
    """
    decoder = MultipartDecoder(boundary)
    fields: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    current: PartHeaders | None = None
    received: list[bytes] = []
    size = 0

    def end_part(part: PartHeaders) -> None:
        data = b"".join(received)
        if part.name in file_fields:
            files[part.name] = UploadedFile(filename=part.filename or "", content_type=part.content_type, data=data)
            return
        try:
            fields[part.name] = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(detail=f"form field {part.name} is not UTF-8 text") from None

    async for chunk in chunks:
        for event in decoder.feed(chunk):
            match event:
                case PartStarted(headers=headers):
                    if headers.name not in file_fields and headers.name not in text_fields:
                        known = ", ".join(sorted([*file_fields, *text_fields]))
                        raise InvalidRequest(detail=f"unknown form field {headers.name!r}; the fields are {known}")
                    if headers.name in fields or headers.name in files:
                        raise InvalidRequest(detail=f"form field {headers.name!r} is given twice")
                    if headers.name in file_fields and headers.filename is None:
                        raise InvalidRequest(detail=f"form field {headers.name!r} must be a file (with a filename)")
                    if headers.name in text_fields and headers.filename is not None:
                        raise InvalidRequest(detail=f"form field {headers.name!r} must be text, not a file")
                    current, received, size = headers, [], 0
                case PartData(data=data):
                    assert current is not None
                    size += len(data)
                    if current.name in file_fields and size > max_file_bytes:
                        raise PayloadTooLarge(
                            detail=f"the file is larger than the upload limit of {size_text(max_file_bytes)}",
                            max_bytes=max_file_bytes,
                        )
                    if current.name not in file_fields and size > max_text_bytes:
                        raise InvalidRequest(detail=f"form field {current.name} is longer than {max_text_bytes} bytes")
                    received.append(data)
                case PartEnded():
                    assert current is not None
                    end_part(current)
                    current = None
    decoder.finish()
    return MultipartForm(fields=fields, files=files)
