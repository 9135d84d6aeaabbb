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


def test_a_glossary_of_one_line_paragraphs_is_split_at_the_gaps_wider_than_its_few_wrapped_lines() -> None:
    # Terms and one-line definitions, 7.5 mm apart (fpdf2: 5 mm lines, 2.5 mm after each paragraph); two wrap.
    terms = [(text, 800.0 - 21.26 * number, 10.0) for number, text in enumerate(
        ["object.__dict__", "A mapping that stores an object's attributes.", "class.__mro__", "A tuple of classes.",
         "class.__bases__", "A tuple of base classes.", "class.__name__", "The name of the class."]
    )]
    wrapped = [("The qualified name of the class,", 600.0, 10.0), ("from the module's top level.", 585.83, 10.0),
               ("Each class keeps a list of weak", 564.57, 10.0), ("references to its subclasses.", 550.4, 10.0)]
    assert paragraphed([lines(*terms, *wrapped)]) == [
        "object.__dict__\n\nA mapping that stores an object's attributes.\n\nclass.__mro__\n\nA tuple of classes.\n\n"
        "class.__bases__\n\nA tuple of base classes.\n\nclass.__name__\n\nThe name of the class.\n\n"
        "The qualified name of the class,\nfrom the module's top level.\n\nEach class keeps a list of weak\nreferences to its subclasses."
    ]
    # With no line set at the leading, no gap says where a paragraph ends: the text is left as it was.
    assert paragraphed([lines(*terms)]) == ["\n".join(text for text, _, _ in terms)]


def test_a_gap_narrower_than_any_line_spacing_does_not_become_the_leading() -> None:
    # A subscript the extractor put on a line of its own, 3 pt under its line, several times.
    page = lines(*(piece for number in range(4) for piece in (
        (f"the sum of x over the items of group {number} is", 700.0 - 30.0 * number, 10.0),
        ("i", 697.0 - 30.0 * number, 10.0),
        ("written out once more below", 688.0 - 30.0 * number, 10.0),
    )))
    texts = paragraphed([page])[0].split("\n\n")
    assert len(texts) == 4  # 3 and 9 pt apart inside a group, 18 pt between groups: not every line a paragraph


def test_lines_without_a_position_are_kept_where_they_are_and_a_document_without_positions_is_left_as_it_was() -> None:
    page = [PrintedLine(text="Title"), PrintedLine(text=""), PrintedLine(text="Body")]
    assert paragraphed([page]) == ["Title\n\nBody"]
    one_line = lines(("alone", 700.0, 10.0))
    assert paragraphed([one_line, []]) == ["alone", ""]
    # A hostile or broken page: a zero size (invisible OCR text), a matrix of infinities or NaN. Read as unpositioned.
    broken = lines(("zero", 700.0, 0.0), ("inf", float("inf"), 10.0), ("nan", 680.0, float("nan")), ("ok", 670.0, 10.0))
    assert paragraphed([broken]) == ["zero\ninf\nnan\nok"]


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
