"""Words broken at a line's end are joined again when the document uses them whole; a writer's hyphen stays."""

from __future__ import annotations

from fpdf import FPDF

from processors.ingestion.extraction.dispatch import extract
from processors.ingestion.extraction.document import MediaType
from processors.ingestion.extraction.hyphenation import rejoined_words


def test_a_typesetters_break_is_joined_when_the_document_uses_the_word_on_any_page() -> None:
    pages = ["The decoder reads declara-\ntions in order.", "Every DECLARATIONS entry is checked; OP-\nTIONAL fields too.", "OPTIONAL"]
    assert rejoined_words(pages) == [
        "The decoder reads declarations in order.",
        "Every DECLARATIONS entry is checked; OPTIONAL fields too.",
        "OPTIONAL",
    ]


def test_a_writers_hyphen_at_a_line_end_stays_and_only_the_break_goes() -> None:
    assert rejoined_words(["A well-\nknown method, a non-\nstring key."]) == ["A well-known method, a non-string key."]


def test_hyphens_inside_a_line_numbers_and_dashes_before_a_break_are_left_alone() -> None:
    pages = ["x-ray and co-\n operate", "version 2-\n3 and YYMM-\n42", "a dash -\nthen more", "co-operate"]
    assert rejoined_words(pages) == pages


def test_a_pdf_reads_a_word_broken_across_two_lines_as_one() -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 6, "Structure manip-\nulation is the library's main job.\nEach manipulation is checked.")
    document = extract(bytes(pdf.output()), MediaType.PDF)
    assert document.sections[0].text == "Structure manipulation is the library's main job.\nEach manipulation is checked."
