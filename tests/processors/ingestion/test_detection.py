"""Which kind of document an upload is: bytes first for PDF and DOCX, then the name, then the declared type."""

import io
import zipfile

import pytest

from processors.ingestion.extraction.detection import UnsupportedMediaType, detect_media_type
from processors.ingestion.extraction.document import MediaType
from kernel.errors import UnsupportedMediaType as UnsupportedRequestMediaType

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
OLE_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)


def zip_of(*names: str) -> bytes:
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w") as archive:
        for name in names:
            archive.writestr(name, "<xml/>")
    return output.getvalue()


def test_a_pdf_is_known_by_its_bytes_whatever_its_name_or_declared_type(report_pdf: bytes) -> None:
    assert detect_media_type("report.pdf", "application/pdf", report_pdf[:4096]) is MediaType.PDF
    assert detect_media_type("scan", None, report_pdf[:4096]) is MediaType.PDF
    assert detect_media_type("report.txt", "text/plain", report_pdf[:4096]) is MediaType.PDF
    # Acrobat reads a header preceded by junk (some generators write a few bytes first).
    assert detect_media_type("report.pdf", None, b"\r\n\x00junk%PDF-1.4\n") is MediaType.PDF
    assert detect_media_type("pdf-notes.md", None, b"# Notes\n\nEvery PDF starts with %PDF-1.7") is MediaType.MARKDOWN


def test_a_docx_is_a_zip_holding_word_document_xml(report_docx: bytes) -> None:
    assert detect_media_type("handbook.docx", DOCX_TYPE, report_docx) is MediaType.DOCX
    assert detect_media_type(None, None, report_docx) is MediaType.DOCX  # the whole file: its parts are listed
    assert detect_media_type(None, None, report_docx[:4096]) is MediaType.DOCX  # a head: found in local headers
    assert detect_media_type(None, None, zip_of("[Content_Types].xml", "word/document.xml")) is MediaType.DOCX


def test_a_zip_without_a_word_document_is_refused() -> None:
    with pytest.raises(UnsupportedMediaType, match="ZIP archive, not a Word document"):
        detect_media_type("photos.zip", "application/zip", zip_of("a.jpg", "b.jpg"))
    with pytest.raises(UnsupportedMediaType):
        detect_media_type("sheet.xlsx", None, zip_of("[Content_Types].xml", "xl/workbook.xml"))


def test_a_docx_head_too_short_to_list_its_parts_is_known_by_its_name() -> None:
    head = zip_of("[Content_Types].xml", "_rels/.rels")[:30]
    assert detect_media_type("handbook.docx", None, head) is MediaType.DOCX
    assert detect_media_type("upload", DOCX_TYPE, head) is MediaType.DOCX


def test_an_ole_file_is_an_encrypted_docx_only_if_it_says_docx() -> None:
    assert detect_media_type("secret.docx", None, OLE_HEADER) is MediaType.DOCX
    with pytest.raises(UnsupportedMediaType, match=r"legacy Office file .* save it as \.docx"):
        detect_media_type("old.doc", "application/msword", OLE_HEADER)


@pytest.mark.parametrize(
    ("filename", "media_type"),
    [
        ("notes.md", MediaType.MARKDOWN),
        ("NOTES.MARKDOWN", MediaType.MARKDOWN),
        ("notes.txt", MediaType.TEXT),
        ("page.html", MediaType.HTML),
        ("page.HTM", MediaType.HTML),
        ("C:\\fakepath\\page.htm", MediaType.HTML),
        ("uploads/2024/notes.md", MediaType.MARKDOWN),
    ],
)
def test_text_formats_are_known_by_their_extension(filename: str, media_type: MediaType) -> None:
    # The extension wins over a generic or wrong declared type.
    assert detect_media_type(filename, "application/octet-stream", b"# hello") is media_type
    assert detect_media_type(filename, "text/html", b"# hello") is media_type


@pytest.mark.parametrize(
    ("declared", "media_type"),
    [
        ("text/markdown; charset=utf-8", MediaType.MARKDOWN),
        ("text/x-markdown", MediaType.MARKDOWN),
        ("TEXT/HTML", MediaType.HTML),
        ("application/xhtml+xml", MediaType.HTML),
        ("text/plain", MediaType.TEXT),
    ],
)
def test_without_a_known_extension_the_declared_type_decides(declared: str, media_type: MediaType) -> None:
    assert detect_media_type("README", declared, b"hello") is media_type
    assert detect_media_type("server.log", declared, b"hello") is media_type


def test_a_name_without_extension_and_no_declared_type_is_sniffed() -> None:
    assert detect_media_type("README", None, b"  <!DOCTYPE html><html><p>hi") is MediaType.HTML
    assert detect_media_type("page", "application/octet-stream", b"<!-- c --><html lang=en>") is MediaType.HTML
    assert detect_media_type("README", None, "Plain words, caf\u00e9.".encode()) is MediaType.TEXT
    # A head may end inside a UTF-8 sequence.
    assert detect_media_type(None, None, "caf\u00e9".encode()[:-1]) is MediaType.TEXT
    with pytest.raises(UnsupportedMediaType, match=r"'a\.out' is a \.out file"):
        detect_media_type("a.out", None, b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00")
    with pytest.raises(UnsupportedMediaType, match="not a document turnlog recognises"):
        detect_media_type("program", None, b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00")


def test_a_name_or_type_claiming_pdf_or_docx_is_not_enough() -> None:
    with pytest.raises(UnsupportedMediaType, match=r"'fake\.pdf' is named \.pdf but its bytes are not a PDF"):
        detect_media_type("fake.pdf", "application/pdf", b"hello")
    with pytest.raises(UnsupportedMediaType, match="is named .docx but its bytes are not a Word document"):
        detect_media_type("fake.docx", None, b"hello")
    with pytest.raises(UnsupportedMediaType, match="is declared application/pdf but its bytes are not a PDF"):
        detect_media_type("upload", "application/pdf", b"hello")


@pytest.mark.parametrize(
    ("filename", "declared", "head"),
    [
        ("photo.jpg", "image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF"),
        ("data.csv", "text/csv", b"a,b\n1,2\n"),
        ("movie.mp4", None, b"\x00\x00\x00\x18ftypmp42"),
        (None, "application/json", b"{}"),
    ],
)
def test_other_kinds_are_refused_naming_what_is_supported(filename, declared, head) -> None:
    with pytest.raises(UnsupportedMediaType) as raised:
        detect_media_type(filename, declared, head)
    error = raised.value
    assert "turnlog reads PDF, Word (.docx), HTML, Markdown and plain text" in error.detail
    assert error.extra["supported"] == [media_type.value for media_type in MediaType]
    assert (error.filename, error.declared_content_type) == (filename, declared)
    assert isinstance(error, UnsupportedRequestMediaType)  # answers 415 through the API's one table
