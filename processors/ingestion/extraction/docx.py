"""Word (.docx): paragraphs and tables in body order, under the document's Title and Heading styles."""

from __future__ import annotations

import io

from processors.ingestion.extraction.detection import OLE_MAGIC
from processors.ingestion.extraction.document import ExtractedDocument, ExtractionFailed, MediaType
from processors.ingestion.extraction.sections import SectionBuilder, clean_title, first_line

__all__ = ["extract_docx"]


def extract_docx(data: bytes) -> ExtractedDocument:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    if data.startswith(OLE_MAGIC):
        raise ExtractionFailed(
            media_type=MediaType.DOCX,
            reason="the Word document is encrypted: it needs a password to open; upload a copy without a password",
        )
    document = docx.Document(io.BytesIO(data))
    sections = SectionBuilder()
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
            for block in cell.iter_inner_content():
                parts.append(_docx_table_text(block) if isinstance(block, Table) else block.text)
            text = " ".join(" ".join(parts).split())
            if text:
                cells.append(text)
        if cells:
            rows.append(" | ".join(cells))
    return "\n".join(rows)
