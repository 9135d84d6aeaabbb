"""HTML: a page's content in reading order, h1-h6 as headings, table rows as lines of cells.

A page of a documentation site or a web page carries its site's chrome around the content: menus, a table of
contents of the whole site, search boxes, theme pickers, footers, "¶" links after every heading. Repeated on every
page, it would be indexed on every page (and put into prompts). The page's own markup says what is content, in the
standard's terms: its main landmark (`<main>`, `role="main"`) when it has one, never the navigation, search, banner
and contentinfo landmarks, and a heading's self-link glyph is not part of its text. What is merely hidden stays: a
documentation page hides the tabs not shown ("yarn" beside "npm"), and they are content.
"""

from __future__ import annotations

import re

from processors.ingestion.extraction.decoding import text_or_refuse
from processors.ingestion.extraction.document import ExtractedDocument, MediaType
from processors.ingestion.extraction.sections import SectionBuilder, clean_title, first_line

__all__ = ["add_html_text", "extract_html", "parse_html"]

_HTML_DROPPED = ("script", "style", "nav", "noscript", "template", "title")
# WAI-ARIA landmarks that are never the page's content; `header` and `footer` are the banner and contentinfo when
# they belong to the page, not to an article or section (HTML-AAM).
_CHROME_ROLES = frozenset({"navigation", "search", "banner", "contentinfo"})
_SECTIONING = ["article", "aside", "main", "nav", "section"]
# What a permalink shows instead of words: Sphinx and MkDocs "¶", Node's "#", "§", Docusaurus' zero-width space, an icon.
_PERMALINK_GLYPHS = frozenset({"", "¶", "#", "§", "\u200b", "🔗"})
_HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_HTML_BLOCKS = frozenset(
    "address article aside blockquote body caption dd details dialog div dl dt fieldset figcaption figure footer "
    "form header hgroup hr html li main menu ol p search section summary table ul".split()
)
_HTML_CELLS = frozenset({"td", "th"})
_CELL_SEPARATORS = re.compile(r"(?: ?\| ?)+")


def extract_html(data: bytes) -> ExtractedDocument:
    text_or_refuse(data, MediaType.HTML)
    soup = parse_html(data)  # the bytes, not our decoding: bs4 honours the page's own <meta charset>
    page_title = clean_title(soup.title.get_text()) if soup.title is not None else None
    _drop_what_is_not_content(soup)
    sections = SectionBuilder()
    _add_text(_main_landmark(soup) or soup, sections)
    built = sections.build()
    title = page_title or sections.first_heading or first_line(built)
    return ExtractedDocument(title=title, sections=built)


def parse_html(markup: bytes | str):
    import warnings

    from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning

    with warnings.catch_warnings():
        # A short page without tags "looks like a file name" to bs4; it is a page all the same.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        return BeautifulSoup(markup, "html.parser")


def add_html_text(soup, sections: SectionBuilder) -> None:
    """The text of parsed HTML, in reading order: h1-h6 start sections, blocks are paragraphs, rows are lines."""
    _drop_what_is_not_content(soup)
    _add_text(soup, sections)


def _drop_what_is_not_content(soup) -> None:
    for dropped in [*soup.find_all(list(_HTML_DROPPED)), *soup.find_all(_is_chrome)]:
        dropped.decompose()


def _add_text(soup, sections: SectionBuilder) -> None:
    from bs4 import NavigableString, Tag
    from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

    line: list[str] = []
    paragraph_break = object()

    def end_paragraph() -> None:
        lines = (" ".join(text.split()) for text in "".join(line).split("\n"))
        # Cells of a row were joined by " | ": drop the separators that empty cells and row edges leave.
        sections.paragraph("\n".join(_CELL_SEPARATORS.sub(" | ", text).strip(" |") for text in lines))
        line.clear()

    # Iterative walk (an explicit stack): hostile HTML may nest deeper than Python's recursion limit.
    stack: list[object] = [soup]
    while stack:
        item = stack.pop()
        if item is paragraph_break:
            end_paragraph()
        elif isinstance(item, NavigableString):
            if not isinstance(item, (Comment, Declaration, Doctype, ProcessingInstruction)):
                line.append(re.sub(r"\s+", " ", str(item)))
        elif isinstance(item, str):
            line.append(item)
        elif isinstance(item, Tag):
            name = item.name
            if name in _HTML_HEADINGS:
                end_paragraph()
                sections.heading(item.get_text())
            elif name == "pre":
                end_paragraph()
                sections.paragraph(item.get_text())
            elif name == "br":
                line.append("\n")
            elif name in _HTML_BLOCKS:
                end_paragraph()
                stack.append(paragraph_break)
                stack.extend(reversed(item.contents))
            elif name == "tr":
                stack.append("\n")
                stack.extend(reversed(item.contents))
            elif name in _HTML_CELLS:
                stack.append(" | ")
                stack.extend(reversed(item.contents))
            else:
                stack.extend(reversed(item.contents))
    end_paragraph()


def _main_landmark(soup):
    """The page's one main landmark, outermost, if it has text; None when there is none, or several."""
    mains = [tag for tag in soup.find_all(_is_main) if tag.find_parent(_is_main) is None]
    if len(mains) == 1 and mains[0].get_text(strip=True):
        return mains[0]
    return None


def _is_main(tag) -> bool:
    return tag.name == "main" or _role(tag) == "main"


def _is_chrome(tag) -> bool:
    """Landmarks and marks that say "not content": navigation, search, the page's banner and footer, permalinks."""
    if _role(tag) in _CHROME_ROLES:
        return True
    if tag.name in ("header", "footer") and tag.find_parent(_SECTIONING) is None and not tag.has_attr("role"):
        return True
    return tag.name == "a" and str(tag.get("href", "")).startswith("#") and tag.get_text(strip=True) in _PERMALINK_GLYPHS


def _role(tag) -> str:
    # A role attribute may list fallbacks ("main region"); the first one a browser knows is used, the first here.
    roles = str(tag.get("role", "")).split()
    return roles[0].lower() if roles else ""
