"""Plain text: paragraphs split at blank lines, titled by the first line."""

from __future__ import annotations

import re

from processors.ingestion.extraction.decoding import text_or_refuse
from processors.ingestion.extraction.document import ExtractedDocument, MediaType
from processors.ingestion.extraction.sections import SectionBuilder, clean_text, first_line

__all__ = ["extract_text"]


def extract_text(data: bytes) -> ExtractedDocument:
    text = text_or_refuse(data, MediaType.TEXT)
    sections = SectionBuilder()
    for paragraph in re.split(r"\n[ \t\f\v]*\n", clean_text(text)):
        sections.paragraph(paragraph)
    built = sections.build()
    return ExtractedDocument(title=first_line(built), sections=built)
