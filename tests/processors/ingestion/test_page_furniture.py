"""Running heads and feet leave a paged document's text; its content stays, numbered or repeated."""

from __future__ import annotations

from fpdf import FPDF

from processors.ingestion.extraction.dispatch import extract
from processors.ingestion.extraction.document import MediaType
from processors.ingestion.extraction.page_furniture import without_page_furniture


def test_a_title_a_chapter_head_with_its_page_number_a_notice_and_page_numbers_leave_every_page() -> None:
    notice = "© 2026 Acme. All rights reserved."
    pages = [
        f"Router Manual\nChapter 1: Setup 5\nPlug the router in.\nWait for the light.\n{notice}\n5",
        f"Router Manual\nChapter 1: Setup 6\nOpen the admin page.\n{notice}\n6",
        f"Router Manual\nChapter 1: Setup 7\nLog in.\n{notice}\n7",
        f"Router Manual\nChapter 2: Wi-Fi 8\nPick a channel.\n{notice}\n8",
        f"Router Manual\nChapter 2: Wi-Fi 9\nSet a password.\n\n{notice}\n9\n",
    ]
    assert without_page_furniture(pages) == [
        "Plug the router in.\nWait for the light.",
        "Open the admin page.",
        "Log in.",
        # A chapter of two pages keeps its head: it takes three pages to tell a head from a line of content.
        "Chapter 2: Wi-Fi 8\nPick a channel.",
        "Chapter 2: Wi-Fi 9\nSet a password.",
    ]


def test_numbered_lines_that_do_not_count_the_pages_and_lines_inside_a_page_stay() -> None:
    pages = [
        "Question 1\nWhat is DNS?\nQuestion 2\nWhat is DHCP?\nPage 1 of 3",
        "Question 3\nWhat is NAT?\nPage 2 of 3",
        "Question 4\nRouter Manual\nWhat is a VLAN?\nQuestion 5\nPage 3 of 3",
    ]
    # "Question N" opens every page, but not one per page; "of 3" is the same on every page, the page's number is not.
    assert without_page_furniture(pages) == [
        "Question 1\nWhat is DNS?\nQuestion 2\nWhat is DHCP?",
        "Question 3\nWhat is NAT?",
        "Question 4\nRouter Manual\nWhat is a VLAN?\nQuestion 5",
    ]


def test_a_line_on_two_pages_only_or_a_document_of_two_pages_keeps_it() -> None:
    two_of_four = ["Summary\nA.", "Summary\nB.", "Details\nC.", "Details and more\nD."]
    assert without_page_furniture(two_of_four) == ["Summary\nA.", "Summary\nB.", "Details\nC.", "Details and more\nD."]
    assert without_page_furniture(["Memo\nFirst page.\n1", "Memo\nSecond page.\n2"]) == ["Memo\nFirst page.\n1", "Memo\nSecond page.\n2"]


def test_a_pdf_manual_printed_with_running_heads_and_feet_is_read_without_them() -> None:
    class Manual(FPDF):
        def header(self) -> None:
            self.set_font("Helvetica", size=9)
            self.cell(0, 8, "Acme Router Manual", new_x="LMARGIN", new_y="NEXT")

        def footer(self) -> None:
            self.set_y(-15)
            self.set_font("Helvetica", size=9)
            self.cell(0, 8, f"Page {self.page_no()} of {{nb}}", align="C")

    pdf = Manual()
    pdf.set_font("Helvetica", size=12)
    for text in ("Plug the router in and wait for the light.", "Open the admin page.", "Pick a channel.", "Set a password."):
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 6, text)
    document = extract(bytes(pdf.output()), MediaType.PDF)
    assert [section.text for section in document.sections] == [
        "Plug the router in and wait for the light.", "Open the admin page.", "Pick a channel.", "Set a password."
    ]
    assert [section.page for section in document.sections] == [1, 2, 3, 4]
    assert document.title == "Acme Router Manual"  # no title in the metadata: the first line, as printed


def test_a_listing_that_opens_a_few_pages_of_a_chapter_stays_and_lone_page_numbers_still_go() -> None:
    # A programming book printed without heads: the same listing's first lines open pages 2, 5 and 9 of ten. A head
    # runs along its chapter, on every page or every other one; a page number counts the pages wherever it stands.
    listing = "Filename: src/main.rs\nfn main() {"
    pages = [f"Prose of page {n}, with more prose.\nAnd its second line." for n in range(1, 11)]
    for index in (1, 4, 8):
        pages[index] = f"{listing}\n    println!(\"page {index + 1}\");\n}}\nThen prose."
    for index in (0, 3, 7):  # chapter openings print their number alone on top, and nothing else repeats there
        pages[index] = f"{index + 5}\n{pages[index]}"
    kept = without_page_furniture(pages)
    assert [page.startswith(listing) for page in kept] == [index in (1, 4, 8) for index in range(10)]
    assert [page.split("\n")[0] for page in kept if page.split("\n")[0].isdigit()] == []


def test_where_the_pages_show_their_paragraphs_a_listing_that_opens_page_after_page_stays() -> None:
    # A PDF read from its lines' positions: paragraphs stand apart, and so do heads and feet. Three pages in a row open
    # with the same listing; only the head set apart above it, and the page number below, are furniture.
    listing = "#[derive(Debug)]\nstruct Rectangle {\n    width: u32,\n}"
    prose = ["It has a width.", "Its width is a u32.", "Debug prints it.", "Nothing else is in it."]
    pages = [f"Rust by Example\n\n{listing}\n\n{prose[n - 1]}\n\n{n}" for n in range(1, 5)]
    assert without_page_furniture(pages) == [f"{listing}\n\n{prose[n - 1]}" for n in range(1, 5)]
    # The same pages as plain text, with no paragraphs shown: nothing tells the listing's first line from a head.
    plain = [page.replace("\n\n", "\n") for page in pages]
    assert without_page_furniture(plain)[0] == "struct Rectangle {\n    width: u32,\n}\nIt has a width."


def test_a_pdf_whose_pages_open_with_the_same_listing_keeps_it_and_loses_its_heads() -> None:
    class Guide(FPDF):
        def header(self) -> None:
            self.set_font("Helvetica", size=9)
            self.cell(0, 8, "Acme Rust Guide", new_x="LMARGIN", new_y="NEXT")
            self.ln(6)

        def footer(self) -> None:
            self.set_y(-15)
            self.set_font("Helvetica", size=9)
            self.cell(0, 8, str(self.page_no()), align="C")

    listing = ["#[derive(Debug)]", "struct Rectangle {", "    width: u32,", "}"]
    prose = ["It has a width.", "Its width is a u32.", "Debug prints it.", "Nothing else is in it."]
    pdf = Guide()
    for sentence in prose:
        pdf.add_page()
        pdf.set_font("Courier", size=10)
        for line in listing:
            pdf.cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(6)
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 6, sentence)
    document = extract(bytes(pdf.output()), MediaType.PDF)
    texts = [" ".join(section.text.split()) for section in document.sections]
    assert texts == [" ".join(["#[derive(Debug)] struct Rectangle { width: u32, }", sentence]) for sentence in prose]
