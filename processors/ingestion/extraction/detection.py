"""Which kind of document an upload is, from its bytes, name and declared type; `UnsupportedMediaType` (415) if none."""

from __future__ import annotations

import io
import re
import zipfile

import kernel.errors
from processors.ingestion.extraction.decoding import decode_text, looks_binary
from processors.ingestion.extraction.document import MediaType, label

__all__ = ["OLE_MAGIC", "SUPPORTED_FORMATS", "UnsupportedMediaType", "detect_media_type"]

SUPPORTED_FORMATS = "PDF, Word (.docx), HTML, Markdown and plain text"

_EXTENSIONS = {
    ".pdf": MediaType.PDF,
    ".docx": MediaType.DOCX,
    ".html": MediaType.HTML,
    ".htm": MediaType.HTML,
    ".md": MediaType.MARKDOWN,
    ".markdown": MediaType.MARKDOWN,
    ".txt": MediaType.TEXT,
}
_DECLARED = {
    **{media_type.value: media_type for media_type in MediaType},
    "application/xhtml+xml": MediaType.HTML,
    "text/x-markdown": MediaType.MARKDOWN,
}
# Formats recognised by their first bytes; a name or a declared type alone never makes a file one of these.
_BINARY_FORMATS = (MediaType.PDF, MediaType.DOCX)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# An OLE2 compound file: a legacy .doc, or an encrypted .docx (Office wraps those in one).
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Acrobat accepts the header anywhere in the first 1024 bytes (junk before it is common).
_PDF_HEADER_WINDOW = 1024


class UnsupportedMediaType(kernel.errors.UnsupportedMediaType):
    """The upload is not a kind of document turnlog reads (415); `extra["supported"]` lists those it does."""

    def __init__(self, *, detail: str, filename: str | None, declared_content_type: str | None) -> None:
        super().__init__(detail=detail, extra={"supported": [media_type.value for media_type in MediaType]})
        self.filename = filename
        self.declared_content_type = declared_content_type


def detect_media_type(filename: str | None, declared_content_type: str | None, head_bytes: bytes) -> MediaType:
    """What an upload is, from its first bytes, its name and the type its sender declared, in that order of trust.

    PDF and DOCX are recognised only by their bytes (`%PDF-`; a ZIP holding `word/document.xml`);
    HTML, Markdown and text by their extension, else by the declared type, else (a name without
    extension, no useful type) by sniffing the bytes. `head_bytes` may be the whole file or its
    first few KiB; a DOCX whose first KiB do not name its parts is still recognised by its name.
    """
    name = _base_name(filename)
    shown = repr(name) if name else "the upload"
    extension = _extension(name)
    declared = (declared_content_type or "").split(";", 1)[0].strip().lower()
    declared_type = _DECLARED.get(declared)
    says_docx = extension == ".docx" or declared_type is MediaType.DOCX

    def unsupported(why: str) -> UnsupportedMediaType:
        return UnsupportedMediaType(
            detail=f"{shown} {why}; turnlog reads {SUPPORTED_FORMATS}",
            filename=filename,
            declared_content_type=declared_content_type,
        )

    if head_bytes.startswith(b"%PDF-"):
        return MediaType.PDF
    if b"%PDF-" in head_bytes[:_PDF_HEADER_WINDOW] and _EXTENSIONS.get(extension, MediaType.PDF) in _BINARY_FORMATS:
        return MediaType.PDF  # junk before the header; but a note.md that merely mentions "%PDF-" stays Markdown
    if head_bytes.startswith(_ZIP_MAGIC):
        if says_docx or _zip_holds_word_document(head_bytes):
            return MediaType.DOCX
        raise unsupported("is a ZIP archive, not a Word document")
    if head_bytes.startswith(OLE_MAGIC):
        if says_docx:
            return MediaType.DOCX  # an encrypted .docx: `extract` says so
        raise unsupported("is a legacy Office file (.doc, .xls, .ppt); save it as .docx")
    if extension in _EXTENSIONS:
        media_type = _EXTENSIONS[extension]
        if media_type in _BINARY_FORMATS:
            raise unsupported(f"is named {extension} but its bytes are not a {label(media_type)}")
        return media_type
    if declared_type is not None:
        if declared_type in _BINARY_FORMATS:
            raise unsupported(f"is declared {declared} but its bytes are not a {label(declared_type)}")
        return declared_type
    if not extension and declared in ("", "application/octet-stream", "binary/octet-stream"):
        sniffed = _sniff_text(head_bytes)
        if sniffed is not None:
            return sniffed
        raise unsupported("is not a document turnlog recognises")
    what = f"a {extension} file" if extension else f"of type {declared}"
    raise unsupported(f"is {what}")


def _base_name(filename: str | None) -> str:
    # Browsers and some clients send a path ("C:\\fakepath\\report.pdf"): only the last part names the file.
    return re.split(r"[\\/]", filename or "")[-1].strip()


def _extension(name: str) -> str:
    stem, dot, extension = name.rpartition(".")
    return f".{extension.lower()}" if dot and stem else ""


def _zip_holds_word_document(head_bytes: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(head_bytes)) as archive:
            return "word/document.xml" in archive.namelist()
    except Exception:  # only a head of the archive, or a damaged one: look for the part's name in local headers
        return b"word/document.xml" in head_bytes


def _sniff_text(head_bytes: bytes) -> MediaType | None:
    text = decode_text(head_bytes, final=False)
    if text is None or looks_binary(text):
        return None
    if re.match(r"\s*(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>])", text[:4096], re.IGNORECASE | re.DOTALL):
        return MediaType.HTML
    return MediaType.TEXT
