"""Document extraction: which kind of file an upload is, and its text as titled sections with pages and headings.

Pure functions over bytes, no I/O. Detection fails with `UnsupportedMediaType`, extraction with
`ExtractionFailed`, each with a message a person can act on. The parsers read untrusted bytes and
may raise anything on a hostile or damaged file, so each one runs inside a fence that turns any
exception into `ExtractionFailed`: nothing else ever escapes `extract`.
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import kernel.errors
from kernel.errors import InvalidRequest

__all__ = [
    "ExtractedDocument",
    "ExtractionFailed",
    "MediaType",
    "Section",
    "UnsupportedMediaType",
    "detect_media_type",
    "extract",
]


class MediaType(StrEnum):
    """The kinds of document turnlog reads; the value is the IANA media type."""

    PDF = "application/pdf"
    DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    HTML = "text/html"
    MARKDOWN = "text/markdown"
    TEXT = "text/plain"


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
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Acrobat accepts the header anywhere in the first 1024 bytes (junk before it is common).
_PDF_HEADER_WINDOW = 1024
_TITLE_MAX_CHARS = 200
# UTF-32's little-endian mark begins with UTF-16's, so it is tried first.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


# -- results and errors --------------------------------------------------------------------------


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


class UnsupportedMediaType(kernel.errors.UnsupportedMediaType):
    """The upload is not a kind of document turnlog reads (415); `extra["supported"]` lists those it does."""

    def __init__(self, *, detail: str, filename: str | None, declared_content_type: str | None) -> None:
        super().__init__(detail=detail, extra={"supported": [media_type.value for media_type in MediaType]})
        self.filename = filename
        self.declared_content_type = declared_content_type


class ExtractionFailed(InvalidRequest):
    """The file is of a supported kind but its text cannot be read; `reason` says why, for a person."""

    def __init__(self, *, media_type: MediaType, reason: str) -> None:
        super().__init__(detail=reason)
        self.media_type = media_type
        self.reason = reason


# -- detection -----------------------------------------------------------------------------------


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
    if head_bytes.startswith(_OLE_MAGIC):
        if says_docx:
            return MediaType.DOCX  # an encrypted .docx: `extract` says so
        raise unsupported("is a legacy Office file (.doc, .xls, .ppt); save it as .docx")
    if extension in _EXTENSIONS:
        media_type = _EXTENSIONS[extension]
        if media_type in _BINARY_FORMATS:
            raise unsupported(f"is named {extension} but its bytes are not a {_label(media_type)}")
        return media_type
    if declared_type is not None:
        if declared_type in _BINARY_FORMATS:
            raise unsupported(f"is declared {declared} but its bytes are not a {_label(declared_type)}")
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
    text = _decode_text(head_bytes, final=False)
    if text is None or _looks_binary(text):
        return None
    if re.match(r"\s*(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>])", text[:4096], re.IGNORECASE | re.DOTALL):
        return MediaType.HTML
    return MediaType.TEXT


def _label(media_type: MediaType) -> str:
    return {
        MediaType.PDF: "PDF",
        MediaType.DOCX: "Word document",
        MediaType.HTML: "HTML page",
        MediaType.MARKDOWN: "Markdown file",
        MediaType.TEXT: "text file",
    }[media_type]


# -- extraction ----------------------------------------------------------------------------------


def extract(data: bytes, media_type: MediaType) -> ExtractedDocument:
    """The text of a document as titled sections; `ExtractionFailed` when it has none that can be read."""
    media_type = MediaType(media_type)
    reader = _READERS[media_type]
    try:
        document = reader(bytes(data))
    except ExtractionFailed:
        raise
    except Exception as error:  # untrusted bytes: a parser may raise anything (see the module docstring)
        raise ExtractionFailed(media_type=media_type, reason=f"the {_label(media_type)} is damaged: {_describe(error)}") from error
    if not document.sections:
        raise ExtractionFailed(media_type=media_type, reason=f"no text found in the {_label(media_type)}")
    return document


def _describe(error: Exception) -> str:
    message = " ".join(str(error).split())
    if not message:
        return type(error).__name__
    return message if len(message) <= 200 else message[:199] + "…"


def _extract_pdf(data: bytes) -> ExtractedDocument:
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
            raise failed(f"the PDF is encrypted with a method turnlog cannot read ({_describe(error)})") from error
        if opened == PasswordType.NOT_DECRYPTED:
            raise failed("the PDF is encrypted: it needs a password to open; upload a copy without a password")
    page_count = len(reader.pages)
    if page_count == 0:
        raise failed("the PDF has no pages")
    headings = _pdf_outline_headings(reader)
    sections: list[Section] = []
    carried: str | None = None
    for number, page in enumerate(reader.pages, start=1):
        on_page = headings.get(number, [])
        heading = on_page[0] if on_page else carried
        if on_page:
            carried = on_page[-1]
        # NFKC: PDF fonts often emit presentation forms (the "ﬁ" ligature) that search would miss.
        text = _clean_text(unicodedata.normalize("NFKC", page.extract_text() or ""))
        if text:
            sections.append(Section(text=text, page=number, heading=heading))
    if not sections:
        pages = "page" if page_count == 1 else f"{page_count} pages"
        raise failed(
            f"no text found in the PDF's {pages}: it holds only images, and a scanned PDF needs OCR, which turnlog does not do"
        )
    title = _title(_pdf_metadata_title(reader)) or _first_line(sections)
    return ExtractedDocument(title=title, sections=tuple(sections), pages=page_count)


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
                    title = _title(item.title)
                    if page_index is not None and page_index >= 0 and title:
                        headings.setdefault(page_index + 1, []).append(title)
    except Exception:
        return {}
    return headings


def _extract_docx(data: bytes) -> ExtractedDocument:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    if data.startswith(_OLE_MAGIC):
        raise ExtractionFailed(
            media_type=MediaType.DOCX,
            reason="the Word document is encrypted: it needs a password to open; upload a copy without a password",
        )
    document = docx.Document(io.BytesIO(data))
    sections = _SectionBuilder()
    styled_title: str | None = None
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            sections.paragraph(_docx_table_text(block))
            continue
        if not isinstance(block, Paragraph):
            continue
        text = block.text
        style = block.style.name if block.style is not None else ""
        if style == "Title" or (style or "").startswith("Heading"):
            if style == "Title" and styled_title is None:
                styled_title = _title(text)
            sections.heading(text)
        else:
            sections.paragraph(text)
    built = sections.build()
    title = _title(document.core_properties.title) or styled_title or sections.first_heading or _first_line(built)
    return ExtractedDocument(title=title, sections=built)


def _docx_table_text(table) -> str:
    """One line per row, cells joined by ` | `; nested tables inline; a merged cell counted once."""
    from docx.table import Table

    rows: list[str] = []
    for row in table.rows:
        seen: set[int] = set()
        cells: list[str] = []
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            parts = []
            for block in cell.iter_inner_content():
                parts.append(_docx_table_text(block) if isinstance(block, Table) else block.text)
            text = " ".join(" ".join(parts).split())
            if text:
                cells.append(text)
        if cells:
            rows.append(" | ".join(cells))
    return "\n".join(rows)


_HTML_DROPPED = ("script", "style", "nav", "noscript", "template", "title")
_HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_HTML_BLOCKS = frozenset(
    "address article aside blockquote body caption dd details dialog div dl dt fieldset figcaption figure footer "
    "form header hgroup hr html li main menu ol p search section summary table ul".split()
)
_HTML_CELLS = frozenset({"td", "th"})
_CELL_SEPARATORS = re.compile(r"(?: ?\| ?)+")


def _extract_html(data: bytes) -> ExtractedDocument:
    _text_or_refuse(data, MediaType.HTML)
    soup = _soup(data)  # the bytes, not our decoding: bs4 honours the page's own <meta charset>
    page_title = _title(soup.title.get_text()) if soup.title is not None else None
    sections = _SectionBuilder()
    _add_html(soup, sections)
    built = sections.build()
    title = page_title or sections.first_heading or _first_line(built)
    return ExtractedDocument(title=title, sections=built)


def _soup(markup: bytes | str):
    import warnings

    from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning

    with warnings.catch_warnings():
        # A short page without tags "looks like a file name" to bs4; it is a page all the same.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        return BeautifulSoup(markup, "html.parser")


def _add_html(soup, sections: _SectionBuilder) -> None:
    """The text of parsed HTML, in reading order: h1-h6 start sections, blocks are paragraphs, rows are lines."""
    from bs4 import NavigableString, Tag
    from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

    for dropped in soup.find_all(list(_HTML_DROPPED)):
        dropped.decompose()
    line: list[str] = []
    paragraph_break = object()

    def end_paragraph() -> None:
        lines = (" ".join(text.split()) for text in "".join(line).split("\n"))
        # Cells of a row were joined by " | ": drop the separators that empty cells and row edges leave.
        sections.paragraph("\n".join(_CELL_SEPARATORS.sub(" | ", text).strip(" |") for text in lines))
        line.clear()

    # Iterative walk (an explicit stack): hostile HTML may nest deeper than Python's recursion limit.
    stack: list[object] = [soup]
    while stack:
        item = stack.pop()
        if item is paragraph_break:
            end_paragraph()
        elif isinstance(item, NavigableString):
            if not isinstance(item, (Comment, Declaration, Doctype, ProcessingInstruction)):
                line.append(re.sub(r"\s+", " ", str(item)))
        elif isinstance(item, str):
            line.append(item)
        elif isinstance(item, Tag):
            name = item.name
            if name in _HTML_HEADINGS:
                end_paragraph()
                sections.heading(item.get_text())
            elif name == "pre":
                end_paragraph()
                sections.paragraph(item.get_text())
            elif name == "br":
                line.append("\n")
            elif name in _HTML_BLOCKS:
                end_paragraph()
                stack.append(paragraph_break)
                stack.extend(reversed(item.contents))
            elif name == "tr":
                stack.append("\n")
                stack.extend(reversed(item.contents))
            elif name in _HTML_CELLS:
                stack.append(" | ")
                stack.extend(reversed(item.contents))
            else:
                stack.extend(reversed(item.contents))
    end_paragraph()


def _extract_markdown(data: bytes) -> ExtractedDocument:
    from markdown_it import MarkdownIt

    front_matter_title, text = _split_front_matter(_text_or_refuse(data, MediaType.MARKDOWN))
    parser = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    sections = _SectionBuilder()
    tokens = parser.parse(text)
    table_rows: list[str] = []
    row_cells: list[str] | None = None
    first_h1: str | None = None
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.type == "heading_open" and index + 1 < len(tokens):
            heading = _markdown_inline_text(tokens[index + 1])
            if token.tag == "h1" and first_h1 is None:
                first_h1 = _title(heading)
            sections.heading(heading)
            index += 3  # heading_open, inline, heading_close
            continue
        if token.type == "tr_open":
            row_cells = []
        elif token.type == "tr_close" and row_cells is not None:
            table_rows.append(" | ".join(cell for cell in row_cells if cell))
            row_cells = None
        elif token.type == "table_close":
            sections.paragraph("\n".join(table_rows))
            table_rows = []
        elif token.type == "inline":
            inline = _markdown_inline_text(token)
            if row_cells is not None:
                row_cells.append(" ".join(inline.split()))
            else:
                sections.paragraph(inline)
        elif token.type in ("fence", "code_block"):
            sections.paragraph(token.content)
        elif token.type == "html_block":
            _add_html(_soup(token.content), sections)
        index += 1
    built = sections.build()
    title = front_matter_title or first_h1 or sections.first_heading or _first_line(built)
    return ExtractedDocument(title=title, sections=built)


def _markdown_inline_text(token) -> str:
    """An inline token's words without markup: link text, image alt text, code spans, line breaks kept."""
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "image":
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
    return "".join(parts)


def _split_front_matter(text: str) -> tuple[str | None, str]:
    """YAML front matter (`---` ... `---` at the top) is metadata, not text; its `title:` names the document."""
    match = re.match(r"---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|$)", text, re.DOTALL)
    if match is None:
        return None, text
    title = re.search(r"^title:[ \t]*(.+?)[ \t]*$", match.group(1), re.MULTILINE)
    return (_title(title.group(1).strip("'\"")) if title else None), text[match.end() :]


def _extract_text(data: bytes) -> ExtractedDocument:
    text = _text_or_refuse(data, MediaType.TEXT)
    sections = _SectionBuilder()
    for paragraph in re.split(r"\n[ \t\f\v]*\n", _clean_text(text)):
        sections.paragraph(paragraph)
    built = sections.build()
    return ExtractedDocument(title=_first_line(built), sections=built)


_READERS = {
    MediaType.PDF: _extract_pdf,
    MediaType.DOCX: _extract_docx,
    MediaType.HTML: _extract_html,
    MediaType.MARKDOWN: _extract_markdown,
    MediaType.TEXT: _extract_text,
}


# -- shared pieces -------------------------------------------------------------------------------


class _SectionBuilder:
    """Collects paragraphs; a heading closes the current section and names the next one."""

    def __init__(self) -> None:
        self._sections: list[Section] = []
        self._paragraphs: list[str] = []
        self._heading: str | None = None
        self.first_heading: str | None = None

    def heading(self, text: str) -> None:
        heading = _title(text)
        if not heading:
            return
        self._flush()
        self._heading = heading
        self.first_heading = self.first_heading or heading

    def paragraph(self, text: str) -> None:
        cleaned = _clean_text(text)
        if cleaned:
            self._paragraphs.append(cleaned)

    def build(self) -> tuple[Section, ...]:
        self._flush()
        return tuple(self._sections)

    def _flush(self) -> None:
        # A heading with nothing under it makes no section: it still names the ones that follow.
        if self._paragraphs:
            self._sections.append(Section(text="\n\n".join(self._paragraphs), heading=self._heading))
            self._paragraphs = []


# C0 and C1 control characters except tab, newline and form feed; lone surrogates (from broken PDF
# font maps) would fail later, when the text is encoded as UTF-8 for the log.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    text = _CONTROL.sub("", text)
    text = re.sub(r"[ \t\v]+\n", "\n", text)  # trailing blanks on each line
    text = re.sub(r"\n[ \t\v]*\n(?:[ \t\v]*\n)+", "\n\n", text)  # at most one blank line between paragraphs
    return text.strip()


def _title(text: str | None) -> str | None:
    if not text:
        return None
    title = " ".join(_CONTROL.sub("", text).split())
    if len(title) > _TITLE_MAX_CHARS:
        title = title[: _TITLE_MAX_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return title or None


def _first_line(sections: Iterable[Section]) -> str:
    for section in sections:
        for line in section.text.splitlines():
            title = _title(line)
            if title:
                return title
    return ""


def _decode_text(data: bytes, *, final: bool) -> str | None:
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


def _looks_binary(text: str) -> bool:
    if "\x00" in text:
        return True
    controls = sum(1 for character in text if character < " " and character not in "\t\n\r\f")
    return controls > max(2, len(text) // 100)


def _text_or_refuse(data: bytes, media_type: MediaType) -> str:
    """The decoded text of a text format's file; `ExtractionFailed` if the bytes are not text at all."""
    text = _decode_text(data, final=True)
    if text is None or _looks_binary(text):
        raise ExtractionFailed(
            media_type=media_type,
            reason=f"the file is not a {_label(media_type)}: it holds binary data, not text",
        )
    return text
