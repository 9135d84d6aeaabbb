"""Running heads and feet: the lines a paged document repeats at the top or bottom of its pages.

A manual prints its title, the chapter's name and the page number on every page ("Chapter 3: Utilities 7",
"Shared MIME-info Database", "10"). Read as text, they land in every page's chunk: the same words indexed on every
page, quotes that start with a chapter's name, a page number glued to a sentence. A line is furniture when it is one
of a page's first or last lines and the same line stands at that edge of at least `MIN_PAGES` pages: the same words
(a title, a notice), or the same words around a number that counts the pages, growing by one from page to page
whatever it starts at ("7", "Page 7 of 36", "Chapter 3: Utilities 7"; "© 2026 Acme" is the same words). A numbered
line of content ("Question 4") counts the pages only where there is exactly one per page.

A line of content can open three pages word for word too: a programming book's listings ("Filename: src/main.rs",
"struct Rectangle {"). So where the document shows its paragraphs (a PDF read from its lines' positions), a head or
foot must stand apart from the text, a paragraph of at most `EDGE_LINES` lines; and the same words must stand on at
least `MIN_SHARE` of the pages from their first to their last, as a head runs along its chapter.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

__all__ = ["EDGE_LINES", "MIN_PAGES", "MIN_SHARE", "without_page_furniture"]

EDGE_LINES = 2  # a head or a foot is at most this many lines (a title over a chapter's name; a page number under a notice)
MIN_PAGES = 3
MIN_SHARE = 0.5  # of the pages a mark spans, those it stands on: a book's heads alternate between left and right pages

_NUMBER = re.compile(r"\d+")
# A line as another page may repeat it: its words, and None or the offset from the page's position of a number in it.
_Mark = tuple[str, int | None]


def without_page_furniture(pages: Sequence[str]) -> list[str]:
    """Each page's text without its running heads and feet; pages and their other lines as they were."""
    lines = [page.split("\n") for page in pages]
    # A PDF read from its lines' positions shows its paragraphs (blank lines between them) on nearly every page.
    with_text = [page for page in lines if any(line.strip() for line in page)]
    paragraphs_shown = 2 * sum(_shows_paragraphs(page) for page in with_text) > len(with_text)
    heads = [_edge(page, top=True, apart=paragraphs_shown) for page in lines]
    feet = [_edge(page, top=False, apart=paragraphs_shown) for page in lines]
    running_heads = _running([[page[i] for i in edge] for page, edge in zip(lines, heads)])
    running_feet = _running([[page[i] for i in edge] for page, edge in zip(lines, feet)])
    return [
        "\n".join(_trimmed(page, index, (heads[index], running_heads), (feet[index], running_feet))).strip("\n")
        for index, page in enumerate(lines)
    ]


def _running(edges: list[list[str]]) -> set[_Mark]:
    """The marks of the lines that run along this edge: each on at least `MIN_PAGES` pages. The same words must also
    stand on `MIN_SHARE` of the pages from their first to their last: a head runs along its chapter, on every page or
    every other one, and the first line of a code listing that opens a few of its pages ("Filename: src/main.rs") does
    not. A number that counts the pages needs no more: a chapter's first pages print it alone, far apart."""
    pages: defaultdict[_Mark, list[int]] = defaultdict(list)
    for index, edge in enumerate(edges):
        for mark in {mark for line in edge for mark in _marks(line, index)}:
            pages[mark].append(index)
    return {
        mark for mark, on in pages.items()
        if len(on) >= MIN_PAGES and (mark[1] is not None or len(on) >= MIN_SHARE * (on[-1] - on[0] + 1))
    }


def _trimmed(
    page: list[str], index: int, heads: tuple[list[int], set[_Mark]], feet: tuple[list[int], set[_Mark]]
) -> list[str]:
    """The page from its first line that is not a running head to its last that is not a running foot."""
    (head_lines, running_heads), (foot_lines, running_feet) = heads, feet
    start, end = 0, len(page)
    for line in head_lines:  # from the top, only while each line is furniture: the rest of the page is content
        if not running_heads.intersection(_marks(page[line], index)):
            break
        start = line + 1
    for line in reversed(foot_lines):
        if line < start or not running_feet.intersection(_marks(page[line], index)):
            break
        end = line
    return page[start:end]


def _edge(page: list[str], *, top: bool, apart: bool) -> list[int]:
    """Where the page's lines that may be a head (`top`) or a foot are: its first or last `EDGE_LINES` lines with
    text. With `apart` (the document shows its paragraphs), only those in a paragraph of at most `EDGE_LINES` lines:
    a head stands apart from the text, and the first lines of a listing at the top of a page ("#[derive(Debug)]",
    "struct Rectangle {") run on into it."""
    filled = [number for number, line in enumerate(page) if line.strip()]
    edge = filled[:EDGE_LINES] if top else filled[-EDGE_LINES:]
    if not apart:
        return edge
    return [number for number in edge if _paragraph_length(page, number) <= EDGE_LINES]


def _shows_paragraphs(page: list[str]) -> bool:
    """Whether a blank line stands between two of the page's lines with text."""
    filled = [number for number, line in enumerate(page) if line.strip()]
    return bool(filled) and filled[-1] - filled[0] + 1 > len(filled)


def _paragraph_length(page: list[str], number: int) -> int:
    """How many lines the paragraph holding line `number` has (the lines with text around it, up to blank ones)."""
    first = last = number
    while first > 0 and page[first - 1].strip():
        first -= 1
    while last + 1 < len(page) and page[last + 1].strip():
        last += 1
    return last - first + 1


def _marks(line: str, index: int) -> set[_Mark]:
    """What makes a line the same on another page: the line itself, or its words around a number counting the pages."""
    exact = " ".join(line.casefold().split())
    if not exact:
        return set()
    words = _NUMBER.sub("#", exact)
    # A page number is the page's position plus the same offset on every page (front matter, a cover); a year is not.
    return {(exact, None)} | {(words, int(number) - index) for number in _NUMBER.findall(exact) if len(number) <= 6}
