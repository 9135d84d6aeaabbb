"""Extraction from real files: sections with pages and headings, titles, and typed failures a person can act on."""

import io
import zipfile
from pathlib import Path

import pytest
from fpdf import FPDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.ingestion.extraction.dispatch import extract
from processors.ingestion.extraction.document import ExtractedDocument, ExtractionFailed, MediaType, Section
from processors.ingestion.extraction.pdf import titles_apart
from kernel.errors import InvalidRequest

OLE_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def failure(data: bytes, media_type: MediaType) -> ExtractionFailed:
    with pytest.raises(ExtractionFailed) as raised:
        extract(data, media_type)
    assert raised.value.media_type is media_type
    assert raised.value.detail == raised.value.reason
    return raised.value


# -- PDF ------------------------------------------------------------------------------------------


def test_a_pdf_is_read_page_by_page_with_its_bookmarks_as_headings(report_pdf: bytes, report_pdf_pages) -> None:
    document = extract(report_pdf, MediaType.PDF)
    assert document.title == "Quarterly Report"  # from the metadata
    assert document.pages == 3
    assert [(section.page, section.heading) for section in document.sections] == [
        (1, "Results"),
        (2, "Results"),  # no bookmark on page 2: chapter 1 goes on
        (3, "Outlook"),
    ]
    for section, paragraphs in zip(document.sections, report_pdf_pages):
        assert " ".join(section.text.split()) == " ".join(" ".join(paragraphs).split())


def test_a_pdf_line_printing_a_bookmarks_title_is_a_paragraph_of_its_own() -> None:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    for number, title, paragraph in ((1, "Install", "Run the installer."), (2, "Configure", "Edit the settings file.")):
        pdf.start_section(title)
        pdf.multi_cell(0, 6, f"{number} {title}\n{paragraph}", new_x="LMARGIN", new_y="NEXT")
    pdf.add_page()
    pdf.multi_cell(0, 6, "Restart after each edit.\n3 Upgrade\nBack up first.", new_x="LMARGIN", new_y="NEXT")
    pdf.start_section("Upgrade")  # on page 2, after the line that prints it: still found
    document = extract(bytes(pdf.output()), MediaType.PDF)
    assert [(section.page, section.heading, section.text) for section in document.sections] == [
        (1, "Install", "1 Install\n\nRun the installer.\n\n2 Configure\n\nEdit the settings file."),
        (2, "Upgrade", "Restart after each edit.\n\n3 Upgrade\n\nBack up first."),
    ]


def test_only_lines_printing_the_pages_own_titles_in_outline_order_are_set_apart() -> None:
    text = "Contents\n2.1 Naming . . . 4\nNaming rules vary.\n2.1 Naming\nA name is a path.\nA.2 Limits\nIV. Naming"
    assert titles_apart(text, ["Naming", "Limits"]) == (
        "Contents\n2.1 Naming . . . 4\nNaming rules vary.\n\n2.1 Naming\n\nA name is a path.\n\nA.2 Limits\n\nIV. Naming"
    )
    assert titles_apart("Setup\nRun it.", []) == "Setup\nRun it."


def test_a_pdf_without_a_metadata_title_is_titled_by_its_first_line(make_pdf) -> None:
    document = extract(make_pdf([["Annual meeting minutes", "Present: everyone."]]), MediaType.PDF)
    assert document.title == "Annual meeting minutes"
    assert document.sections == (Section(text="Annual meeting minutes\nPresent: everyone.", page=1, heading=None),)


def test_a_blank_page_keeps_the_page_numbers_of_the_others(make_pdf) -> None:
    document = extract(make_pdf([["First page."], [], ["Third page."]]), MediaType.PDF)
    assert document.pages == 3
    assert [(section.page, section.text) for section in document.sections] == [(1, "First page."), (3, "Third page.")]


def test_a_pdf_encrypted_only_against_editing_opens_without_a_password(report_pdf: bytes, encrypt_pdf) -> None:
    document = extract(encrypt_pdf(report_pdf, user_password="", owner_password="owner"), MediaType.PDF)
    assert [section.page for section in document.sections] == [1, 2, 3]
    assert "Revenue grew" in document.sections[0].text


def test_a_password_protected_pdf_is_refused_as_encrypted(report_pdf: bytes, encrypt_pdf) -> None:
    error = failure(encrypt_pdf(report_pdf, user_password="open sesame", owner_password="owner"), MediaType.PDF)
    assert error.reason == "the PDF is encrypted: it needs a password to open; upload a copy without a password"
    assert isinstance(error, InvalidRequest)  # a problem with the upload, not with turnlog


def test_a_truncated_pdf_is_refused_as_damaged(report_pdf: bytes) -> None:
    error = failure(report_pdf[: len(report_pdf) // 2], MediaType.PDF)
    assert error.reason.startswith("the PDF is damaged: ")


def test_a_pdf_with_garbage_after_its_header_is_refused_as_damaged() -> None:
    assert failure(b"%PDF-1.7\n" + bytes(range(256)) * 4, MediaType.PDF).reason.startswith("the PDF is damaged: ")


def test_an_empty_pdf_is_refused() -> None:
    assert failure(b"", MediaType.PDF).reason == "the PDF is empty"


def test_a_scanned_pdf_without_a_text_layer_is_refused_pointing_at_ocr(scanned_pdf: bytes) -> None:
    assert failure(scanned_pdf, MediaType.PDF).reason == (
        "no text found in the PDF's 2 pages: it holds only images, and a scanned PDF needs OCR, which turnlog does not do"
    )


# -- DOCX -----------------------------------------------------------------------------------------


def test_a_docx_is_cut_at_its_headings_with_tables_in_place(report_docx: bytes) -> None:
    document = extract(report_docx, MediaType.DOCX)
    assert document == ExtractedDocument(
        title="Team Handbook",
        pages=0,
        sections=(
            Section(text="Welcome to the team. This handbook explains how we work.", heading="Team Handbook"),
            Section(text="Core hours are ten to four.\n\nOutside them, work when it suits you.", heading="Working hours"),
            Section(
                # One line per row; the merged cell once; the nested table inside its cell.
                text="Everyone gets twenty-five days of leave.\n\n"
                "Kind | Days | Notes\nAnnual | 25 | carry over 5 max | ten\nSick | as needed",
                heading="Leave",
            ),
            Section(text="Keep every receipt.", heading="Expenses"),
        ),
    )


def test_a_docx_title_comes_from_its_properties_else_its_title_style_else_its_first_heading() -> None:
    import docx

    def saved(document) -> bytes:
        output = io.BytesIO()
        document.save(output)
        return output.getvalue()

    styled = docx.Document()
    styled.add_paragraph("Styled Title", style="Title")
    styled.add_heading("Intro", level=1)
    styled.add_paragraph("Body.")
    assert extract(saved(styled), MediaType.DOCX).title == "Styled Title"

    headed = docx.Document()
    headed.add_paragraph("Before any heading.")
    headed.add_heading("First Heading", level=1)
    headed.add_paragraph("Body.")
    document = extract(saved(headed), MediaType.DOCX)
    assert document.title == "First Heading"
    assert document.sections[0] == Section(text="Before any heading.", heading=None)

    empty = docx.Document()
    empty.add_paragraph("   ")
    assert failure(saved(empty), MediaType.DOCX).reason == "no text found in the Word document"


def test_a_docx_keeps_its_content_controls_tracked_insertions_and_text_boxes_and_leaves_out_its_table_of_contents() -> None:
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml import parse_xml

    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'

    def run(text: str) -> str:
        return f'<w:r><w:t xml:space="preserve">{text}</w:t></w:r>'

    document = docx.Document()
    body = document.element.body
    toc = (f'<w:sdt {w}><w:sdtPr><w:docPartObj><w:docPartGallery w:val="Table of Contents"/></w:docPartObj></w:sdtPr>'
           f"<w:sdtContent><w:p>{run('Contents')}</w:p><w:p>{run('Results 1')}</w:p></w:sdtContent></w:sdt>")
    body.insert(0, parse_xml(toc))
    document.styles.add_style("toc 1", WD_STYLE_TYPE.PARAGRAPH)
    document.add_paragraph("Results\t1", style="toc 1")  # a TOC field's entry
    document.add_heading("Results", level=1)
    cover = f"<w:sdt {w}><w:sdtContent><w:p>{run('Prepared for the board.')}</w:p></w:sdtContent></w:sdt>"
    body.insert(len(body) - 1, parse_xml(cover))
    filled = document.add_paragraph("Author: ")
    filled._p.append(parse_xml(f"<w:sdt {w}><w:sdtContent>{run('Ada Lovelace')}</w:sdtContent></w:sdt>"))
    revised = document.add_paragraph("Revenue ")
    revised._p.append(parse_xml(f"<w:ins {w} w:id='1' w:author='A' w:date='2026-01-01T00:00:00Z'>{run('rose')}</w:ins>"))
    revised._p.append(parse_xml(
        f"<w:del {w} w:id='2' w:author='A' w:date='2026-01-01T00:00:00Z'><w:r><w:delText>fell</w:delText></w:r></w:del>"
    ))
    revised.add_run(" this year.")
    boxed = document.add_paragraph("Beside a box.")
    mc = 'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"'
    box = f"<w:txbxContent><w:p>{run('Box text')}</w:p></w:txbxContent>"
    boxed._p.append(parse_xml(  # a drawing, and the copy of it kept for old readers: one text box
        f"<w:r {w} {mc}><mc:AlternateContent><mc:Choice Requires='wps'><w:drawing>{box}</w:drawing></mc:Choice>"
        f"<mc:Fallback><w:pict>{box}</w:pict></mc:Fallback></mc:AlternateContent></w:r>"
    ))
    table = document.add_table(rows=1, cols=1)
    table.cell(0, 0)._tc.append(parse_xml(f"<w:sdt {w}><w:sdtContent><w:p>{run('In a cell control')}</w:p></w:sdtContent></w:sdt>"))
    output = io.BytesIO()
    document.save(output)
    assert extract(output.getvalue(), MediaType.DOCX).sections == (
        Section(
            text="Prepared for the board.\n\nAuthor: Ada Lovelace\n\nRevenue rose this year.\n\nBeside a box.\n\nBox text\n\n"
            "In a cell control",
            heading="Results",
        ),
    )


def test_a_truncated_docx_is_refused_as_damaged(report_docx: bytes) -> None:
    error = failure(report_docx[: len(report_docx) // 2], MediaType.DOCX)
    assert error.reason.startswith("the Word document is damaged: ")


def test_a_zip_without_a_word_document_is_refused_as_damaged() -> None:
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w") as archive:
        archive.writestr("hello.txt", "hello")
    assert failure(output.getvalue(), MediaType.DOCX).reason.startswith("the Word document is damaged: ")


def test_an_encrypted_docx_is_refused_as_encrypted() -> None:
    # Office stores an encrypted .docx inside an OLE2 container; its header is what tells them apart.
    error = failure(OLE_HEADER + bytes(1024), MediaType.DOCX)
    assert error.reason == "the Word document is encrypted: it needs a password to open; upload a copy without a password"


# -- HTML -----------------------------------------------------------------------------------------

ARTICLE_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="windows-1252">
  <title>Caf\xe9 guide</title>
  <style>body { color: red }</style>
  <script>console.log("never text")</script>
</head>
<body>
  <nav><a href="/">Home</a> <a href="/about">About</a></nav>
  <!-- a comment is not text -->
  <h1>Brewing</h1>
  <p>Use   fresh
     beans &amp; clean water.<br>Grind just before.</p>
  <ul><li>Espresso</li><li>Filter</li></ul>
  <h2>Ratios</h2>
  <table>
    <tr><th>Method</th><th>Coffee</th><th>Water</th></tr>
    <tr><td>Filter</td><td></td><td>250 g</td></tr>
  </table>
  <pre>ratio = coffee / water
  # keep it near 1/16</pre>
  <noscript>Enable JavaScript</noscript>
  <h3></h3>
  <div>Serve <em>hot</em>.</div>
</body>
</html>
""".encode("cp1252")


def test_html_is_cut_at_its_headings_without_scripts_styles_or_navigation() -> None:
    document = extract(ARTICLE_HTML, MediaType.HTML)
    assert document == ExtractedDocument(
        title="Caf\u00e9 guide",  # decoded by the page's own charset
        sections=(
            Section(text="Use fresh beans & clean water.\nGrind just before.\n\nEspresso\n\nFilter", heading="Brewing"),
            Section(
                text="Method | Coffee | Water\nFilter | 250 g\n\nratio = coffee / water\n  # keep it near 1/16\n\nServe hot.",
                heading="Ratios",  # an empty heading names nothing
            ),
        ),
    )


def test_an_html_page_without_a_title_element_is_titled_by_its_first_heading() -> None:
    page = b"<body><p>Intro line.</p><h2>Setup</h2><p>Install it.</p></body>"
    document = extract(page, MediaType.HTML)
    assert document.title == "Setup"
    assert document.sections == (Section(text="Intro line."), Section(text="Install it.", heading="Setup"))


# A documentation site's page as mdBook, Sphinx, Node's generator and Docusaurus write them: the site's table of contents,
# search, theme menu and help around the page's main landmark, a "¶" link in each heading.
DOCS_SITE_PAGE = """<!DOCTYPE html>
<html><head><title>Ownership - The Book</title></head>
<body>
  <div id="help-popup"><h2>Keyboard shortcuts</h2><p>Press S or / to search in the book</p></div>
  <nav id="sidebar" aria-label="Table of contents"><ol><li>Getting Started</li><li>Ownership</li></ol></nav>
  <div id="menu-bar">
    <ul role="menu"><li role="none"><button role="menuitem">Light</button></li></ul>
    <div role="search"><input placeholder="Search this book"><p>Search results</p></div>
  </div>
  <main>
    <h1>What is Ownership?<a class="headerlink" href="#ownership" title="Link to this heading">\u00b6</a></h1>
    <p>Each value has an <a href="#owner">owner</a>.</p>
    <div class="admonition note" role="note"><p>There is one owner at a time.</p></div>
    <dl><dt>drop(value)<a class="headerlink" href="#drop">\u00b6</a></dt><dd>Runs when the owner goes out of scope.</dd></dl>
    <h2>The Stack<span><a class="mark" href="#stack">#</a></span><a aria-hidden="true" id="legacy_stack"></a><a
      class="hash-link" href="#stack" aria-label="Direct link to The Stack">\u200b</a></h2>
    <p>Last in, first out.</p>
  </main>
  <nav class="nav-wrapper" aria-label="Page navigation"><a href="ch03.html">Previous</a></nav>
</body></html>
""".encode()


def test_a_documentation_page_is_its_main_landmark_without_the_site_around_it() -> None:
    document = extract(DOCS_SITE_PAGE, MediaType.HTML)
    assert document == ExtractedDocument(
        title="Ownership - The Book",
        sections=(
            Section(
                text="Each value has an owner.\n\nThere is one owner at a time.\n\n"
                "drop(value)\n\nRuns when the owner goes out of scope.",
                heading="What is Ownership?",  # a link made of a glyph that points into the page is no word
            ),
            Section(text="Last in, first out.", heading="The Stack"),
        ),
    )


def test_a_real_sphinx_page_is_read_without_its_breadcrumbs_sidebar_footer_or_pilcrows() -> None:
    # Sphinx's own output: CPython ships IDLE's help as a Sphinx 5 page (Lib/idlelib/help.html, PSF licence),
    # copied here from CPython 3.11.7.
    page = (Path(__file__).with_name("fixtures") / "sphinx-idle-help.html").read_bytes()
    document = extract(page, MediaType.HTML)
    headings = [section.heading for section in document.sections]
    text = "\n\n".join(section.text for section in document.sections)
    assert headings[:3] == ["IDLE", "Menus", "File menu (Shell and Editor)"]  # before: "Navigation", "IDLE¶", "Menus¶"
    assert document.sections[0].text.startswith("Source code: Lib/idlelib/\n\nIDLE is Python’s Integrated Development")
    assert text.endswith("feature changes can be backported (see PEP 434).")  # the page's last paragraph, then no footer
    for chrome in ("Python »", "Previous topic", "Show Source", "Created using Sphinx", "Found a bug", "¶"):
        assert chrome not in text and not any(chrome in heading for heading in headings if heading), chrome


def test_a_page_without_a_main_landmark_drops_what_its_markup_says_is_not_content() -> None:
    page = b"""<html><head><title>Release notes</title></head><body>
      <header><a href="/">Example Corp</a> <form role="search"><p>Search the site</p></form></header>
      <div role="navigation"><a href="/a">Products</a> <a href="/b">Pricing</a></div>
      <div class="content">
        <article>
          <header><h1>Version 2.0</h1><p>Released in March.</p></header>
          <p>Faster startup.</p>
          <footer><p>Filed under releases.</p></footer>
        </article>
        <div role="tabpanel"><p>Install with npm.</p></div><div role="tabpanel" hidden><p>Install with yarn.</p></div>
        <section><footer>Section note.</footer></section>
      </div>
      <div role="contentinfo">Contact us</div>
      <footer><p>Copyright 2026 Example Corp</p></footer>
    </body></html>"""
    document = extract(page, MediaType.HTML)
    # An article's (or a section's) own header and footer are its content; the page's are its banner and footer. A tab
    # not shown is hidden, and content all the same.
    assert document.sections == (
        Section(
            text="Released in March.\n\nFaster startup.\n\nFiled under releases.\n\nInstall with npm.\n\n"
            "Install with yarn.\n\nSection note.",
            heading="Version 2.0",
        ),
    )


def test_a_page_with_several_main_landmarks_or_an_empty_one_is_read_whole() -> None:
    several = b"<body><p>Intro.</p><main><p>One.</p></main><div role='main'><p>Two.</p></div></body>"
    assert extract(several, MediaType.HTML).sections == (Section(text="Intro.\n\nOne.\n\nTwo."),)
    empty = b"<body><main> </main><div><p>The text is out here.</p></div></body>"
    assert extract(empty, MediaType.HTML).sections == (Section(text="The text is out here."),)
    nested = b"<body><p>Menu.</p><main><div role='main'><p>Inside.</p></div><p>Also main.</p></main></body>"
    assert extract(nested, MediaType.HTML).sections == (Section(text="Inside.\n\nAlso main."),)


def test_an_html_page_without_text_is_refused() -> None:
    page = b"<html><head><title>Empty</title><script>app()</script></head><body><nav>Menu</nav></body></html>"
    assert failure(page, MediaType.HTML).reason == "no text found in the HTML page"


# -- Markdown -------------------------------------------------------------------------------------

GUIDE_MARKDOWN = """---
title: "Deploy guide"
tags: [ops]
---
Intro before any heading, with **bold**, *emphasis* and a [link](https://example.com).

# Install

Run `pip install turnlog`,
then start it.\\
Check the logs.

```sh
turnlog serve --port 8000
```

Setup notes
-----------

| Setting | Default |
|---------|---------|
| port    | 8000    |

- one
- two ![diagram](d.png)

<div class="note">Back up <b>first</b>.</div>
"""


def test_markdown_is_cut_at_its_headings_without_markup() -> None:
    document = extract(GUIDE_MARKDOWN.encode(), MediaType.MARKDOWN)
    assert document == ExtractedDocument(
        title="Deploy guide",  # front matter is metadata, not text
        sections=(
            Section(text="Intro before any heading, with bold, emphasis and a link."),
            Section(
                text="Run pip install turnlog, then start it.\nCheck the logs.\n\nturnlog serve --port 8000",
                heading="Install",
            ),
            Section(text="Setting | Default\nport | 8000\n\none\n\ntwo diagram\n\nBack up first.", heading="Setup notes"),
        ),
    )


def test_markdown_without_front_matter_is_titled_by_its_first_top_heading() -> None:
    document = extract(b"## Minor\n\ntext\n\n# Major\n\nmore", MediaType.MARKDOWN)
    assert document.title == "Major"
    assert [section.heading for section in document.sections] == ["Minor", "Major"]


# -- plain text -----------------------------------------------------------------------------------


def test_plain_text_is_one_section_of_paragraphs_titled_by_its_first_line() -> None:
    text = "Meeting notes\r\nSecond line of the first paragraph.\r\n\r\n\r\n  \r\nNext paragraph\x07.\r\n"
    document = extract(text.encode(), MediaType.TEXT)
    assert document == ExtractedDocument(
        title="Meeting notes",
        sections=(Section(text="Meeting notes\nSecond line of the first paragraph.\n\nNext paragraph."),),
    )


@pytest.mark.parametrize(
    "encoded",
    [
        "na\u00efve caf\u00e9 \u2014 r\u00e9sum\u00e9".encode(),
        "na\u00efve caf\u00e9 \u2014 r\u00e9sum\u00e9".encode("utf-8-sig"),
        "na\u00efve caf\u00e9 \u2014 r\u00e9sum\u00e9".encode("utf-16"),
        "na\u00efve caf\u00e9 \u2014 r\u00e9sum\u00e9".encode("cp1252"),
    ],
)
def test_plain_text_is_decoded_by_bom_then_utf8_then_windows_1252(encoded: bytes) -> None:
    assert extract(encoded, MediaType.TEXT).sections[0].text == "na\u00efve caf\u00e9 \u2014 r\u00e9sum\u00e9"


def test_plain_text_falls_back_to_latin_1_for_bytes_windows_1252_lacks() -> None:
    assert extract(b"ol\xe9 \x81", MediaType.TEXT).sections[0].text == "ol\u00e9"  # 0x81: a C1 control, dropped


def test_binary_data_is_not_text() -> None:
    for media_type in (MediaType.TEXT, MediaType.MARKDOWN, MediaType.HTML):
        reason = failure(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), media_type).reason
        assert reason.endswith("holds binary data, not text")


@pytest.mark.parametrize("media_type", [MediaType.TEXT, MediaType.MARKDOWN, MediaType.HTML])
def test_an_empty_or_blank_text_file_is_refused(media_type: MediaType) -> None:
    assert failure(b"", media_type).reason.startswith("no text found")
    assert failure(b" \n\t\r\n ", media_type).reason.startswith("no text found")


# -- nothing but ExtractionFailed escapes, whatever the bytes -------------------------------------

MAGIC_PREFIXES = [b"", b"%PDF-1.7\n", b"PK\x03\x04", OLE_HEADER, b"<html><h1>", b"---\ntitle: x\n", b"\xef\xbb\xbf", b"\xff\xfe"]


def extracted_or_refused(data: bytes, media_type: MediaType) -> None:
    try:
        document = extract(data, media_type)
    except ExtractionFailed as error:
        assert error.reason and error.media_type is media_type
        return
    assert document.sections and all(section.text.strip() for section in document.sections)
    assert isinstance(document.title, str)
    assert extract(data, media_type) == document  # deterministic: replay extracts again


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    media_type=st.sampled_from(MediaType),
    prefix=st.sampled_from(MAGIC_PREFIXES),
    data=st.binary(max_size=2048),
)
def test_random_bytes_extract_or_fail_with_extraction_failed(media_type: MediaType, prefix: bytes, data: bytes) -> None:
    extracted_or_refused(prefix + data, media_type)


@pytest.fixture(scope="module")
def real_samples(report_pdf: bytes, report_docx: bytes) -> dict[MediaType, bytes]:
    return {
        MediaType.PDF: report_pdf,
        MediaType.DOCX: report_docx,
        MediaType.HTML: ARTICLE_HTML,
        MediaType.MARKDOWN: GUIDE_MARKDOWN.encode(),
        MediaType.TEXT: "Plain text\n\nwith two paragraphs, caf\u00e9.".encode(),
    }


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(media_type=st.sampled_from(MediaType), edits=st.data())
def test_damaged_real_files_extract_or_fail_with_extraction_failed(real_samples, media_type, edits) -> None:
    # Random bytes rarely get past a parser's first check; a real file with a few bytes changed does.
    data = bytearray(real_samples[media_type])
    for _ in range(edits.draw(st.integers(1, 8), label="edits")):
        position = edits.draw(st.integers(0, len(data) - 1), label="position")
        match edits.draw(st.sampled_from(["flip", "cut", "insert", "truncate"]), label="edit"):
            case "flip":
                data[position] ^= edits.draw(st.integers(1, 255), label="mask")
            case "cut":
                del data[position : position + edits.draw(st.integers(1, 64), label="length")]
            case "insert":
                data[position:position] = edits.draw(st.binary(min_size=1, max_size=32), label="inserted")
            case "truncate":
                del data[position:]
        if not data:
            break
    extracted_or_refused(bytes(data), media_type)
