"""Word (.docx): paragraphs and tables in body order, under the document's Title and Heading styles.

Text inside content controls counts: a template's fields, a form's answers, a cover page's title are content controls
(`w:sdt`), which python-docx's own iteration skips, block and inline alike. So do tracked insertions and text boxes (read
after the paragraph they are anchored in). Word's own table of contents is left out: its entries repeat the headings.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

from processors.ingestion.extraction.detection import OLE_MAGIC
from processors.ingestion.extraction.document import ExtractedDocument, ExtractionFailed, MediaType
from processors.ingestion.extraction.sections import SectionBuilder, clean_title, first_line

__all__ = ["extract_docx"]


def extract_docx(data: bytes) -> ExtractedDocument:
    import docx
    from docx.table import Table

    if data.startswith(OLE_MAGIC):
        raise ExtractionFailed(
            media_type=MediaType.DOCX,
            reason="the Word document is encrypted: it needs a password to open; upload a copy without a password",
        )
    document = docx.Document(io.BytesIO(data))
    sections = SectionBuilder()
    styled_title: str | None = None
    for block in _blocks(document.element.body, document):
        if isinstance(block, Table):
            sections.paragraph(_docx_table_text(block))
            continue
        text = _paragraph_text(block)
        style = block.style.name if block.style is not None else ""
        if _TOC_ENTRY.fullmatch(style or ""):
            continue  # an entry of a table of contents made by a TOC field
        if style == "Title" or (style or "").startswith("Heading"):
            if style == "Title" and styled_title is None:
                styled_title = clean_title(text)
            sections.heading(text)
        else:
            sections.paragraph(text)
    built = sections.build()
    title = clean_title(document.core_properties.title) or styled_title or sections.first_heading or first_line(built)
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
            for block in _blocks(cell._tc, cell):
                parts.append(_docx_table_text(block) if isinstance(block, Table) else _paragraph_text(block))
            text = " ".join(" ".join(parts).split())
            if text:
                cells.append(text)
        if cells:
            rows.append(" | ".join(cells))
    return "\n".join(rows)


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_P, _TBL, _SDT, _RUN, _TEXT_BOX = f"{_W}p", f"{_W}tbl", f"{_W}sdt", f"{_W}r", f"{_W}txbxContent"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_TOC_ENTRY = re.compile(r"toc \d", re.IGNORECASE)  # the built-in styles "toc 1" .. "toc 9"
# Where a run inside a paragraph is not the paragraph's text: deleted or moved away, in a nested paragraph (a text box),
# or in the copy of a drawing kept for old readers.
_NOT_THE_PARAGRAPHS = frozenset({_P, f"{_W}del", f"{_W}moveFrom", _TEXT_BOX, _MC_FALLBACK})
# Where a text box inside a paragraph is not the paragraph's own: inside another box, or in that copy.
_NOT_ITS_OWN_BOX = frozenset({_TEXT_BOX, _MC_FALLBACK})


def _blocks(container, parent) -> Iterator:
    """The paragraphs and tables of a body or a table cell in order, those inside content controls included."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in container.iterchildren():
        if child.tag == _P:
            yield Paragraph(child, parent)
            for box in child.iter(_TEXT_BOX):  # a text box's paragraphs follow the paragraph it is anchored in
                if _belongs_to(box, child, _NOT_ITS_OWN_BOX):
                    yield from _blocks(box, parent)
        elif child.tag == _TBL:
            yield Table(child, parent)
        elif child.tag == _SDT and not _is_table_of_contents(child):
            content = child.find(f"{_W}sdtContent")
            if content is not None:
                yield from _blocks(content, parent)


def _is_table_of_contents(sdt) -> bool:
    gallery = sdt.find(f"{_W}sdtPr/{_W}docPartObj/{_W}docPartGallery")
    return gallery is not None and gallery.get(f"{_W}val") == "Table of Contents"


def _paragraph_text(paragraph) -> str:
    """The paragraph's runs in order: in hyperlinks, fields, inline content controls and tracked insertions too."""
    from docx.text.run import Run

    p = paragraph._p
    return "".join(Run(run, paragraph).text for run in p.iter(_RUN) if _belongs_to(run, p, _NOT_THE_PARAGRAPHS))


def _belongs_to(element, p, not_through: frozenset[str]) -> bool:
    """Whether `element`, found inside paragraph `p`, is reached from it without passing any element in `not_through`."""
    node = element.getparent()
    while node is not None and node is not p:
        if node.tag in not_through:
            return False
        node = node.getparent()
    return node is p
