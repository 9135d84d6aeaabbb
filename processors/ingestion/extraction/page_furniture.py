"""Running heads and feet: the lines a paged document repeats at the top or bottom of its pages.

A manual prints its title, the chapter's name and the page number on every page ("Chapter 3: Utilities 7",
"Shared MIME-info Database", "10"). Read as text, they land in every page's chunk: the same words indexed on every
page, quotes that start with a chapter's name, a page number glued to a sentence. A line is furniture when it is one
of a page's first or last lines and the same line stands at that edge of at least `MIN_PAGES` pages, and of at least
half the pages from the first of them to the last: the same words (a title, a notice), or the same words around a
number that counts the pages, growing by one from page to page whatever it starts at ("7", "Page 7 of 36", "Chapter
3: Utilities 7"; "© 2026 Acme" is the same words). A line of content can open three pages word for word (a
programming book's listings: "Filename: src/main.rs", "struct Rectangle {"), but not page after page along a chapter
as a head does; and a numbered one ("Question 4") counts the pages only where there is exactly one per page.
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
    running_heads = _running([_edge(page, top=True) for page in lines])
    running_feet = _running([_edge(page, top=False) for page in lines])
    return [
        "\n".join(_trimmed(page, index, running_heads, running_feet)).strip("\n") for index, page in enumerate(lines)
    ]


def _running(edges: list[list[str]]) -> set[_Mark]:
    """The marks of the lines that run along this edge: each on at least `MIN_PAGES` pages. The same words must also
    stand on `MIN_SHARE` of the pages from their first to their last: a head runs along its chapter, on every page or
    every other one, and the first line of a code listing that opens a few of its pages ("struct Rectangle {") does
    not. A number that counts the pages needs no more: a chapter's first pages print it alone, far apart."""
    pages: defaultdict[_Mark, list[int]] = defaultdict(list)
    for index, edge in enumerate(edges):
        for mark in {mark for line in edge for mark in _marks(line, index)}:
            pages[mark].append(index)
    return {
        mark for mark, on in pages.items()
        if len(on) >= MIN_PAGES and (mark[1] is not None or len(on) >= MIN_SHARE * (on[-1] - on[0] + 1))
    }


def _trimmed(page: list[str], index: int, running_heads: set[_Mark], running_feet: set[_Mark]) -> list[str]:
    start, end = 0, len(page)
    for _ in range(EDGE_LINES):  # from the top, only while each line is furniture: the rest of the page is content
        while start < end and not page[start].strip():
            start += 1
        if start < end and running_heads.intersection(_marks(page[start], index)):
            start += 1
    for _ in range(EDGE_LINES):
        while end > start and not page[end - 1].strip():
            end -= 1
        if end > start and running_feet.intersection(_marks(page[end - 1], index)):
            end -= 1
    return page[start:end]


def _edge(page: list[str], *, top: bool) -> list[str]:
    lines = [line for line in page if line.strip()]
    return lines[:EDGE_LINES] if top else lines[-EDGE_LINES:]


def _marks(line: str, index: int) -> set[_Mark]:
    """What makes a line the same on another page: the line itself, or its words around a number counting the pages."""
    exact = " ".join(line.casefold().split())
    if not exact:
        return set()
    words = _NUMBER.sub("#", exact)
    # A page number is the page's position plus the same offset on every page (front matter, a cover); a year is not.
    return {(exact, None)} | {(words, int(number) - index) for number in _NUMBER.findall(exact) if len(number) <= 6}
