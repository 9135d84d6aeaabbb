"""What extraction yields: the kinds of document turnlog reads, their text as sections, and `ExtractionFailed`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kernel.errors import InvalidRequest

__all__ = ["ExtractedDocument", "ExtractionFailed", "MediaType", "Section", "describe_error", "label"]


class MediaType(StrEnum):
    """The kinds of document turnlog reads; the value is the IANA media type."""

    PDF = "application/pdf"
    DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    HTML = "text/html"
    MARKDOWN = "text/markdown"
    TEXT = "text/plain"


@dataclass(frozen=True, kw_only=True)
class Section:
    """A run of text under one heading on one page; chunks never cross from one section to the next.

    Paragraphs inside `text` are separated by a blank line. `page` is 1-based (PDF only);
    `heading` is the nearest heading above the text, if the format has headings.
    """

    text: str
    page: int | None = None
    heading: str | None = None


@dataclass(frozen=True, kw_only=True)
class ExtractedDocument:
    """A document's text in reading order. `pages` is the page count of a PDF, 0 for formats without pages."""

    title: str
    sections: tuple[Section, ...]
    pages: int = 0


class ExtractionFailed(InvalidRequest):
    """The file is of a supported kind but its text cannot be read; `reason` says why, for a person."""

    def __init__(self, *, media_type: MediaType, reason: str) -> None:
        super().__init__(detail=reason)
        self.media_type = media_type
        self.reason = reason


def label(media_type: MediaType) -> str:
    """The kind of document as a person names it, for messages: "PDF", "Word document"."""
    return {
        MediaType.PDF: "PDF",
        MediaType.DOCX: "Word document",
        MediaType.HTML: "HTML page",
        MediaType.MARKDOWN: "Markdown file",
        MediaType.TEXT: "text file",
    }[media_type]


def describe_error(error: Exception) -> str:
    """A parser's exception as one short line for a person, for the reason of an `ExtractionFailed`."""
    message = " ".join(str(error).split())
    if not message:
        return type(error).__name__
    return message if len(message) <= 200 else message[:199] + "…"
