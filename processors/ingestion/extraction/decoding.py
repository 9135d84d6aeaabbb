"""Text from a file's bytes in an unknown encoding, and telling text from binary data."""

from __future__ import annotations

import codecs

from processors.ingestion.extraction.document import ExtractionFailed, MediaType, label

__all__ = ["decode_text", "looks_binary", "text_or_refuse"]

# UTF-32's little-endian mark begins with UTF-16's, so it is tried first.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes, *, final: bool) -> str | None:
    """Text from bytes: by byte-order mark, else UTF-8, else Windows-1252, else Latin-1 (which never fails).

    With `final=False` the bytes are a head of the file, which may end inside a UTF-8 sequence.
    """
    for mark, encoding in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            try:
                return codecs.getincrementaldecoder(encoding)().decode(data, final=final)
            except UnicodeDecodeError:
                return None
    for encoding in ("utf-8", "cp1252"):
        try:
            return codecs.getincrementaldecoder(encoding)().decode(data, final=final)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def looks_binary(text: str) -> bool:
    if "\x00" in text:
        return True
    controls = sum(1 for character in text if character < " " and character not in "\t\n\r\f")
    return controls > max(2, len(text) // 100)


def text_or_refuse(data: bytes, media_type: MediaType) -> str:
    """The decoded text of a text format's file; `ExtractionFailed` if the bytes are not text at all."""
    text = decode_text(data, final=True)
    if text is None or looks_binary(text):
        raise ExtractionFailed(
            media_type=media_type,
            reason=f"the file is not a {label(media_type)}: it holds binary data, not text",
        )
    return text
