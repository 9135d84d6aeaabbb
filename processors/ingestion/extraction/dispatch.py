"""`extract`: a document's bytes through the reader for its kind, fenced so that only `ExtractionFailed` escapes."""

from __future__ import annotations

from processors.ingestion.extraction.document import (
    ExtractedDocument,
    ExtractionFailed,
    MediaType,
    describe_error,
    label,
)
from processors.ingestion.extraction.docx import extract_docx
from processors.ingestion.extraction.html import extract_html
from processors.ingestion.extraction.markdown import extract_markdown
from processors.ingestion.extraction.pdf import extract_pdf
from processors.ingestion.extraction.text import extract_text

__all__ = ["extract"]

_READERS = {
    MediaType.PDF: extract_pdf,
    MediaType.DOCX: extract_docx,
    MediaType.HTML: extract_html,
    MediaType.MARKDOWN: extract_markdown,
    MediaType.TEXT: extract_text,
}


def extract(data: bytes, media_type: MediaType) -> ExtractedDocument:
    """The text of a document as titled sections; `ExtractionFailed` when it has none that can be read.

    The readers parse untrusted bytes and may raise anything on a hostile or damaged file, so each
    one runs inside a fence that turns any exception into `ExtractionFailed`: nothing else escapes.
    """
    media_type = MediaType(media_type)
    reader = _READERS[media_type]
    try:
        document = reader(bytes(data))
    except ExtractionFailed:
        raise
    except Exception as error:  # untrusted bytes: a reader may raise anything (see the docstring)
        reason = f"the {label(media_type)} is damaged: {describe_error(error)}"
        raise ExtractionFailed(media_type=media_type, reason=reason) from error
    if not document.sections:
        raise ExtractionFailed(media_type=media_type, reason=f"no text found in the {label(media_type)}")
    return document
