"""Markdown (CommonMark with tables): headings, paragraphs, code, tables and embedded HTML; front matter names it."""

from __future__ import annotations

import re

from processors.ingestion.extraction.decoding import text_or_refuse
from processors.ingestion.extraction.document import ExtractedDocument, MediaType
from processors.ingestion.extraction.html import add_html_text, parse_html
from processors.ingestion.extraction.sections import SectionBuilder, clean_title, first_line

__all__ = ["extract_markdown"]


def extract_markdown(data: bytes) -> ExtractedDocument:
    from markdown_it import MarkdownIt

    front_matter_title, text = _split_front_matter(text_or_refuse(data, MediaType.MARKDOWN))
    parser = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    sections = SectionBuilder()
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
                first_h1 = clean_title(heading)
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
            add_html_text(parse_html(token.content), sections)
        index += 1
    built = sections.build()
    title = front_matter_title or first_h1 or sections.first_heading or first_line(built)
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
    return (clean_title(title.group(1).strip("'\"")) if title else None), text[match.end() :]
