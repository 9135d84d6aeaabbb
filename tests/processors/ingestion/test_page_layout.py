"""A PDF page's lines in reading order and its paragraphs, read from where its lines stand: a block drawn out of order
goes back to its place; a paragraph ends at more space than the leading, another size, another column."""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF
from pypdf import PdfReader

from inference.citations import best_quote
from processors.ingestion.extraction.dispatch import extract
from processors.ingestion.extraction.document import MediaType
from processors.ingestion.extraction.page_layout import PrintedLine, in_reading_order, paragraphed, printed_headings
from processors.ingestion.extraction.pdf import paragraphs_across_pages


def lines(*printed: tuple[str, float, float]) -> list[PrintedLine]:
    return [PrintedLine(text=text, baseline=baseline, size=size, left=72.0) for text, baseline, size in printed]


def placed(*printed: tuple[str, float, float]) -> list[PrintedLine]:
    """Lines of 10 pt text, each at (text, baseline, left)."""
    return [PrintedLine(text=text, baseline=baseline, size=10.0, left=left) for text, baseline, left in printed]


def texts(printed: list[PrintedLine]) -> list[str]:
    return [line.text for line in printed]


def test_blocks_a_browser_draws_after_the_text_go_back_to_the_gaps_they_stand_in() -> None:
    page = placed(
        ("Running text, first line", 700, 72), ("its second line.", 688, 72),
        ("Text after the first code block.", 640, 72),  # a gap from 688 to 640: the first block stands in it
        ("Text after the second.", 580, 72),
        ("first block, line 1", 670, 84), ("first block, line 2", 658, 84),  # drawn after all the text
        ("second block", 610, 84),
        ("A running head drawn last", 760, 72),
    )
    assert texts(in_reading_order(page)) == [
        "A running head drawn last", "Running text, first line", "its second line.", "first block, line 1",
        "first block, line 2", "Text after the first code block.", "second block", "Text after the second.",
    ]


def test_a_heading_drawn_last_goes_before_the_line_right_under_it_not_a_button_drawn_first() -> None:
    # As Chromium prints Node's API pages: the copy buttons (at the right edge, beside the code) come first, the
    # headings (positioned, for their anchors) last.
    page = placed(
        ("C O P Y", 732, 517), ("C O P Y", 461, 517),
        ("path.posix.basename('/tmp/myfile.html');", 746, 46), ("// Returns: 'myfile.html'", 732, 46),
        ("information, see this MSDN page.", 671, 28),
        ("path <string>", 620, 48), ("Returns: <string>", 584, 46),
        ("path.win32.basename('C:\\foo.HTML');", 475, 46), ("// Returns: 'foo.HTML'", 461, 46),
        ("path.basename(path[, suffix])", 642, 30),
    )
    assert texts(in_reading_order(page))[4:7] == ["information, see this MSDN page.", "path.basename(path[, suffix])", "path <string>"]


def test_the_second_column_and_a_superscript_keep_their_place() -> None:
    two_columns = placed(
        ("left 1", 700, 72), ("left 2", 688, 72), ("left 3", 640, 72),  # a gap in the left column at 664 ...
        ("right 1", 700, 320), ("right 2", 664, 320), ("right 3", 630, 320),  # ... where the right column has a line
    )
    assert in_reading_order(two_columns) == two_columns
    superscript = placed(("E = mc", 700, 72), ("2", 704, 110), ("and so on.", 688, 72))
    assert in_reading_order(superscript) == superscript
    # Drawn in more pieces than a page of text has (a chart's labels, a hostile file): read as drawn.
    scattered = placed(*((f"label {number}", 20.0 * number, 72) for number in range(500)),
                       *((f"other {number}", 20.0 * number + 10, 72) for number in range(500)))
    assert in_reading_order(scattered) == scattered
    unpositioned = [PrintedLine(text="a"), PrintedLine(text="b")]
    assert in_reading_order(unpositioned) == unpositioned and in_reading_order([]) == []


def test_a_page_printed_by_a_browser_reads_in_the_order_it_shows() -> None:
    """Chromium's own PDF of `fixtures/harbour-guide.html` (headless, no header and footer): its code blocks and the
    note are positioned boxes, painted after the page's flow, so their text comes last in the PDF."""
    fixtures = Path(__file__).with_name("fixtures")
    data = (fixtures / "harbour-guide.pdf").read_bytes()
    drawn = PdfReader(fixtures / "harbour-guide.pdf").pages[0].extract_text()
    assert drawn.index("berth book --length") > drawn.index("A receipt is sent")  # as drawn: the code after the end

    text = extract(data, MediaType.PDF).sections[0].text
    assert text.split("\n\n")[2:] == [
        "To book a berth, send the boat's length and the nights you need to the harbour office:",
        "berth book --length 12.5 --nights 3 --from 2026-07-01",
        "The office answers within a day with the berth's number and the fee.",
        "Fuel is sold at the south pier only, between eight and noon.",
        "Mooring fees are paid at the office beside the crane. Cards and cash are both taken there.",
        "berth pay --berth 14 --card",
        "A receipt is sent by email once the fee is paid.",
    ]


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


def test_a_paragraph_a_page_break_cut_goes_whole_to_the_page_it_starts_on() -> None:
    pages = ["Intro.\n\nThis is not the fastest hashing algorithm", "available, but it is safe.\n\nNext paragraph.", "Last."]
    assert paragraphs_across_pages(pages, {}) == [
        "Intro.\n\nThis is not the fastest hashing algorithm\navailable, but it is safe.", "Next paragraph.", "Last."
    ]
    # A paragraph that fills a page goes on over the next one; a page with no text (an image) is not bridged.
    filled = ["It begins here and", "goes on over a whole page and", "ends here.\n\nThe next one.", "", "lower case again"]
    assert paragraphs_across_pages(filled, {}) == [
        "It begins here and\ngoes on over a whole page and\nends here.", "", "The next one.", "", "lower case again"
    ]


def test_a_sentences_end_a_capital_a_bookmarked_title_or_a_short_line_at_the_break_is_no_cut_paragraph() -> None:
    pages = ["It ends here.", "and this is lower case", "Capitalised start", "1.2 a numbered title", "body text"]
    assert paragraphs_across_pages(pages, {}) == pages[:3] + ["1.2 a numbered title\nbody text", ""]
    assert paragraphs_across_pages(pages, {5: ["body text"]}) == pages  # the next page opens with its bookmark's title
    assert paragraphs_across_pages(["a title", "next"], {1: ["a title"]}) == ["a title", "next"]
    # A page that ends on a short line ends with its paragraph (a docstring's summary, a line of code, a label).
    short_end = ["A line of running text as long as the page's other lines are\nand its short end", "lower case start"]
    assert paragraphs_across_pages(short_end, {}) == short_end


def test_a_pdf_keeps_a_sentence_the_page_break_cut_on_the_page_it_starts_on() -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for _ in range(3):
        pdf.multi_cell(0, 6, "Every berth has water and power, and a ladder. " * 3, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
    words = "The harbour gate closes at ten in the evening from October to March, and at midnight in the summer".split()
    cut = max(count for count in range(len(words)) if pdf.get_string_width(" ".join(words[:count])) < 0.95 * pdf.epw)
    begins, ends = " ".join(words[:cut]), " ".join(words[cut:]) + ", when the season's boats come in."
    pdf.set_y(265)
    pdf.multi_cell(0, 6, begins, new_x="LMARGIN", new_y="NEXT")  # the page's last line, a full one ...
    pdf.add_page()
    pdf.multi_cell(0, 6, ends, new_x="LMARGIN", new_y="NEXT")  # ... and the next one's first
    pdf.ln(3)
    pdf.multi_cell(0, 6, "Fuel is sold at the south pier, and so is ice. " * 2, new_x="LMARGIN", new_y="NEXT")
    document = extract(bytes(pdf.output()), MediaType.PDF)

    first, second = document.sections
    assert first.text.split("\n\n")[-1] == f"{begins}\n{ends}"  # whole, on the page it starts on
    assert (first.page, second.page) == (1, 2) and second.text.startswith("Fuel is sold")


def test_without_bookmarks_the_lines_printed_larger_than_the_body_are_the_headings() -> None:
    body = [(f"Body text of the section, line {number}.", 600.0 - 14 * number, 10.0) for number in range(6)]
    first_page = lines(
        ("Storing Keys with Associated Values", 760.0, 18.0), ("in Hash Maps", 738.0, 18.0),  # one heading, wrapped
        *body, ("Creating a New Hash Map", 500.0, 14.0), ("7", 40.0, 14.0),  # a page number is no heading
    )
    second_page = lines(*body)
    assert printed_headings([first_page, second_page]) == {
        1: ["Storing Keys with Associated Values in Hash Maps", "Creating a New Hash Map"]
    }
    assert printed_headings([second_page]) == {} and printed_headings([[PrintedLine(text="x")]]) == {}


def test_a_pdf_without_an_outline_takes_its_headings_from_the_larger_lines() -> None:
    pdf = FPDF()
    for title in ("Mooring", "Fuel"):
        pdf.add_page()
        pdf.set_font("Helvetica", "B", size=16)
        pdf.multi_cell(0, 9, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, f"{title} is handled at the harbour office, which opens at eight. " * 3, new_x="LMARGIN", new_y="NEXT")
    document = extract(bytes(pdf.output()), MediaType.PDF)
    assert [(section.page, section.heading) for section in document.sections] == [(1, "Mooring"), (2, "Fuel")]


def test_a_damaged_matrix_leaves_its_text_unpositioned_and_the_page_readable() -> None:
    """pypdf hands the visitor what the file holds; a damaged file's matrix or size may be no number at all."""
    from processors.ingestion.extraction.pdf import _printed_lines

    class DamagedPage:  # stands in for pypdf's page: the values a broken content stream gives the visitor
        def extract_text(self, visitor_text) -> str:
            visitor_text("Hello", [1, 0, 0, 1, 0, 0], [1, 0, 0, 1, "x", 700], None, 10)
            visitor_text("\nworld", [1, 0, 0, 1, 0, 0], [1, 0, 0, 1, 72, 686], None, None)
            return "Hello\nworld"

    printed = _printed_lines(DamagedPage())
    assert texts(printed) == ["Hello", "world"]
    assert paragraphed([in_reading_order(printed)]) == ["Hello\nworld"]
