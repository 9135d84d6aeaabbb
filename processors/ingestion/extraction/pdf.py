"""PDF: each page's text in reading order and in paragraphs (from where its lines stand), without its running heads
and feet, words broken at line ends joined again, under the outline's bookmarks as headings (or, without an outline,
the lines printed larger than the body text); a line printing a bookmark's title ("3.3 Invoking asn1Decoding") is a
paragraph of its own, so neither a chunk nor a citation's quote runs it into the sentence after it.

A password or images alone are refused.
"""

from __future__ import annotations

import io
import math
import re
import unicodedata
from collections import Counter

from processors.ingestion.extraction.document import (
    ExtractedDocument,
    ExtractionFailed,
    MediaType,
    Section,
    describe_error,
)
from processors.ingestion.extraction.hyphenation import rejoined_words
from processors.ingestion.extraction.page_furniture import without_page_furniture
from processors.ingestion.extraction.page_layout import PrintedLine, in_reading_order, paragraphed, printed_headings
from processors.ingestion.extraction.sections import clean_text, clean_title, first_line

__all__ = ["extract_pdf"]


def extract_pdf(data: bytes) -> ExtractedDocument:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    def failed(reason: str) -> ExtractionFailed:
        return ExtractionFailed(media_type=MediaType.PDF, reason=reason)

    if not data.strip():
        raise failed("the PDF is empty")
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        try:
            # Many PDFs are encrypted only to restrict printing or copying: they open with an empty password.
            opened = reader.decrypt("")
        except DependencyError as error:
            raise failed(f"the PDF is encrypted with a method turnlog cannot read ({describe_error(error)})") from error
        if opened == PasswordType.NOT_DECRYPTED:
            raise failed("the PDF is encrypted: it needs a password to open; upload a copy without a password")
    page_count = len(reader.pages)
    if page_count == 0:
        raise failed("the PDF has no pages")
    lines = [in_reading_order(_printed_lines(page)) for page in reader.pages]
    headings = _pdf_outline_headings(reader) or {
        number: [title for text in titles if (title := clean_title(unicodedata.normalize("NFKC", text)))]
        for number, titles in printed_headings(lines).items()
    }
    # NFKC: PDF fonts often emit presentation forms (the "ﬁ" ligature) that search would miss.
    printed = [clean_text(unicodedata.normalize("NFKC", text)) for text in paragraphed(lines)]
    sections: list[Section] = []
    carried: str | None = None
    for number, text in enumerate(rejoined_words(paragraphs_across_pages(without_page_furniture(printed), headings)), start=1):
        on_page = headings.get(number, [])
        heading = on_page[0] if on_page else carried
        if on_page:
            carried = on_page[-1]
        if text:
            sections.append(Section(text=titles_apart(text, on_page), page=number, heading=heading))
    if not sections:
        pages = "page" if page_count == 1 else f"{page_count} pages"
        raise failed(
            f"no text found in the PDF's {pages}: it holds only images, and a scanned PDF needs OCR, which turnlog does not do"
        )
    # A running head is often the document's name: the first line is read from the pages as printed.
    title = clean_title(_pdf_metadata_title(reader)) or first_line(Section(text=text) for text in printed)
    return ExtractedDocument(title=title, sections=tuple(sections), pages=page_count)


def _printed_lines(page) -> list[PrintedLine]:
    """The page's extracted text, line by line, each with the height of its baseline, its font size (the size and
    baseline most of its characters have: a superscript or a bullet's font does not move a line) and where it starts."""
    pieces: list[tuple[str, float, float, float]] = []

    def printed(text: str, cm: list[float], tm: list[float], font: object, size: float) -> None:
        try:
            a, b, c, d, e, f = _on_page(tm, cm)
            pieces.append((text, float(e), float(f), float(size) * (b * b + d * d) ** 0.5))
        except (TypeError, ValueError, ArithmeticError):  # a damaged matrix: the text without a position
            pieces.append((text, math.nan, math.nan, math.nan))

    text = page.extract_text(visitor_text=printed) or ""
    if "".join(piece[0] for piece in pieces) != text:  # not how this pypdf builds its text: lines without positions
        return [PrintedLine(text=line) for line in text.split("\n")]
    lines: list[PrintedLine] = []
    line = _Line()
    for piece, left, baseline, size in pieces:
        for index, part in enumerate(piece.split("\n")):
            if index:
                lines.append(line.printed())
                line = _Line()
            line.add(part, left=left, baseline=baseline, size=size)
    lines.append(line.printed())
    return lines


class _Line:
    """A line as its pieces come: its text, and by how many printed characters each baseline and size was seen."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.baselines: Counter[float] = Counter()
        self.sizes: Counter[float] = Counter()
        self.left: float | None = None

    def add(self, part: str, *, left: float, baseline: float, size: float) -> None:
        self.text.append(part)
        if printed_characters := len(part.strip()):
            self.baselines[round(baseline, 1)] += printed_characters
            self.sizes[round(size, 1)] += printed_characters
            self.left = left if self.left is None else min(self.left, left)

    def printed(self) -> PrintedLine:
        if not self.baselines:
            return PrintedLine(text="".join(self.text))
        return PrintedLine(
            text="".join(self.text), baseline=self.baselines.most_common(1)[0][0], size=self.sizes.most_common(1)[0][0],
            left=self.left,
        )


def _on_page(text_matrix: list[float], current_matrix: list[float]) -> tuple[float, ...]:
    """The text matrix in page space: the text matrix times the current transformation matrix (PDF 32000, 9.4.4)."""
    a, b, c, d, e, f = text_matrix
    ca, cb, cc, cd, ce, cf = current_matrix
    return (a * ca + b * cc, a * cb + b * cd, c * ca + d * cc, c * cb + d * cd, e * ca + f * cc + ce, e * cb + f * cd + cf)


def paragraphs_across_pages(pages: list[str], titles: dict[int, list[str]]) -> list[str]:
    """The pages with each paragraph a page break cut moved whole to the page it starts on, so that a chunk (which keeps
    to its page) and a quote hold its sentence. A page break cuts a paragraph when the page ends with no sentence's end
    (".", "!", "?", ":", ";") and the next one opens with a lower-case letter, neither line printing a bookmark's title.
    `titles`: page number -> the titles its bookmarks point at."""
    pages = list(pages)
    into: int | None = None  # the page whose last paragraph the next page may go on with
    for index, text in enumerate(pages):
        if into is not None and text and _goes_on(pages[into], text, titles.get(into + 1, []) + titles.get(index + 1, [])):
            head, _, rest = text.partition("\n\n")
            pages[into] += "\n" + head
            pages[index] = rest
            if rest:
                into = index
            continue  # a page the paragraph filled: it may go on over the next one
        into = index if text else None
    return pages


def _goes_on(page: str, next_page: str, titles: list[str]) -> bool:
    last_line, first_line = page.rstrip().rsplit("\n", 1)[-1], next_page.lstrip().split("\n", 1)[0]
    if not last_line or last_line[-1] in ".!?:;" or not first_line[:1].islower():
        return False
    if len(last_line.strip()) < _FULL_LINE * _line_width(page):  # a paragraph's short last line, a title, code
        return False
    return not any(_prints_title(line, title) for line in (last_line, first_line) for title in titles)


# A page ends inside a paragraph on a full line: at least this share of the page's usual long line, in characters.
_FULL_LINE = 0.7


def _line_width(page: str) -> float:
    """The page's usual long line, in characters: the 80th percentile of its lines' lengths."""
    lengths = sorted(len(line.strip()) for line in page.split("\n") if line.strip())
    return lengths[round(0.8 * (len(lengths) - 1))] if lengths else 0.0


def titles_apart(text: str, titles: list[str]) -> str:
    """The page's text with each line that prints one of its bookmarks' titles set apart by blank lines."""
    lines = text.split("\n")
    marked: set[int] = set()
    for title in titles:  # in outline order, each after the one before: a title printed twice is the first
        after = max(marked) + 1 if marked else 0
        found = next((index for index in range(after, len(lines)) if _prints_title(lines[index], title)), None)
        if found is not None:
            marked.add(found)
    parts: list[str] = []
    for index, line in enumerate(lines):
        parts += ["", line, ""] if index in marked else [line]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(parts)).strip("\n")


# A section's number before its title as printed: "3.3", "A.1", "12.", "IV".
_SECTION_NUMBER = re.compile(r"(?:\d+|[A-Z]|[IVXLC]+)(?:\.\d+)*\.?")


def _prints_title(line: str, title: str) -> bool:
    printed, wanted = " ".join(line.split()).casefold(), " ".join(title.split()).casefold()
    if printed == wanted:
        return True
    number, _, rest = printed.partition(" ")
    return rest == wanted and _SECTION_NUMBER.fullmatch(number.upper()) is not None


def _pdf_metadata_title(reader) -> str | None:
    try:
        metadata = reader.metadata
        title = metadata.title if metadata is not None else None
    except Exception:  # a damaged info dictionary costs the title, not the document
        return None
    return title if isinstance(title, str) else None


def _pdf_outline_headings(reader) -> dict[int, list[str]]:
    """Page number -> titles of the bookmarks that point at it, in outline order (best effort: {} if damaged)."""
    from pypdf.generic import Destination

    headings: dict[int, list[str]] = {}
    try:
        pending: list = [list(reader.outline)]
        while pending:  # iterative: a hostile outline may nest deeper than Python's recursion limit
            items = pending.pop()
            for position, item in enumerate(items):
                if isinstance(item, list):
                    pending.append(items[position + 1 :])
                    pending.append(item)
                    break
                if isinstance(item, Destination):
                    page_index = reader.get_destination_page_number(item)
                    title = clean_title(item.title)
                    if page_index is not None and page_index >= 0 and title:
                        headings.setdefault(page_index + 1, []).append(title)
    except Exception:
        return {}
    return headings
