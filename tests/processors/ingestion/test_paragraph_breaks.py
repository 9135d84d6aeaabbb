"""A PDF's paragraphs are read from where its lines stand: more space than the leading, another size, another column."""

from __future__ import annotations

from fpdf import FPDF

from inference.citations import best_quote
from processors.ingestion.extraction.dispatch import extract
from processors.ingestion.extraction.document import MediaType
from processors.ingestion.extraction.paragraph_breaks import PrintedLine, paragraphed


def lines(*printed: tuple[str, float, float]) -> list[PrintedLine]:
    return [PrintedLine(text=text, baseline=baseline, size=size) for text, baseline, size in printed]


def test_a_gap_wider_than_the_leading_ends_a_paragraph_and_the_leading_does_not() -> None:
    # As TeX sets 10.9 pt text (libtasn1's manual): 13.1 pt from line to line, 16.1 between paragraphs.
    page = lines(
        ("For simple types the simple parsing functions may be used", 665.0, 10.9),
        ("instead.", 651.9, 10.9),
        ("The header file of this library is libtasn1.h.", 635.8, 10.9),
        ("The main type used in it is asn1_node, and it is used to store", 619.7, 10.9),
        ("structures (instances).", 606.6, 10.9),
    )
    assert paragraphed([page]) == [
        "For simple types the simple parsing functions may be used\ninstead.\n\n"
        "The header file of this library is libtasn1.h.\n\n"
        "The main type used in it is asn1_node, and it is used to store\nstructures (instances)."
    ]


def test_a_line_in_another_size_or_higher_up_the_page_starts_a_paragraph_and_one_on_the_same_baseline_does_not() -> None:
    page = lines(
        ("2.4 Library Notes", 700.0, 14.3),  # a heading: another size, and the usual gap after it
        ("Text under the heading,", 686.0, 10.9),
        ("its second line.", 672.9, 10.9),
        ("a table cell", 672.9, 10.9),  # the extractor broke one visual line in two
        ("The next column starts here.", 760.0, 10.9),
        ("And goes on.", 746.9, 10.9),
    )
    assert paragraphed([page]) == [
        "2.4 Library Notes\n\nText under the heading,\nits second line.\na table cell\n\nThe next column starts here.\nAnd goes on."
    ]


def test_the_leading_is_read_from_the_whole_document_so_a_page_of_one_line_paragraphs_is_still_split() -> None:
    prose = lines(*((f"line {number} of running prose", 700.0 - 12.0 * number, 10.0) for number in range(8)))
    one_line_paragraphs = lines(("First item.", 700.0, 10.0), ("Second item.", 682.0, 10.0), ("Third item.", 664.0, 10.0))
    assert paragraphed([prose, one_line_paragraphs])[1] == "First item.\n\nSecond item.\n\nThird item."


def test_lines_without_a_position_are_kept_where_they_are_and_a_document_without_positions_is_left_as_it_was() -> None:
    page = [PrintedLine(text="Title"), PrintedLine(text=""), PrintedLine(text="Body")]
    assert paragraphed([page]) == ["Title\n\nBody"]
    one_line = lines(("alone", 700.0, 10.0))
    assert paragraphed([one_line, []]) == ["alone", ""]


def test_a_pdfs_paragraphs_come_apart_and_a_quote_stays_inside_one() -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    label = "Closing time of the harbour gate: ten in the evening from October to March, midnight in the summer months"
    first = "Boats that arrive later wait at the outer buoy. The harbour master lets them in at six in the morning."
    second = "Mooring fees are paid at the office beside the crane. Cards and cash are both taken there."
    for paragraph in (label, first, second):
        pdf.multi_cell(60, 5, paragraph, new_x="LMARGIN", new_y="NEXT")  # narrow: each paragraph wraps over lines
        pdf.ln(3)
    text = extract(bytes(pdf.output()), MediaType.PDF).sections[0].text

    paragraphs = text.split("\n\n")
    assert [" ".join(paragraph.split()) for paragraph in paragraphs] == [label, first, second]
    assert all(paragraph.count("\n") >= 1 for paragraph in paragraphs)  # wrapped lines stay in their paragraph
    # Before, the label (no full stop) ran into the sentence after it: the quote was both.
    assert best_quote(text, "Late boats wait at the outer buoy") == "Boats that arrive later wait at the outer buoy."
