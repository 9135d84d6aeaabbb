"""A PDF page's lines in reading order, where its paragraphs end and its headings, from where the lines stand on the page.

A PDF holds positioned text, not paragraphs, and its text comes in the order it was drawn, not read.

Reading order: a browser printing a page draws the positioned boxes after the rest (a code block with a copy button,
a callout), so their text comes after the page's other text, away from the paragraph that introduces it, and a
running head drawn last comes after the page's end. A run of lines that starts higher up the page than the line
before it, and stands in a band of the page that no other line shares, was drawn out of order: it goes back where it
stands, before the first line below it. A run that shares its band with other lines (the next column of a two-column
page, a superscript) keeps its place.

Paragraphs: the extracted text has one line after another with no blank line between paragraphs, so a chunk and a
citation's quote run one paragraph into the next ("... options too. Report bugs to: ..."). Typesetters set
paragraphs, list items, code blocks and headings apart by more space than the leading between a paragraph's own
lines (TeX: 13.1 pt between lines at 10.9 pt, 16.1 between paragraphs), or by another font size. So a blank line goes
between two lines of a page when the second stands lower than the first by more than `MORE_THAN_LEADING` times the
leading of their font size, or is set in another size, or starts higher on the page (another column). The leading of
a size is read from the whole document: the smallest gap between two consecutive lines of that size that recurs (a
paragraph's own lines are set at it; paragraphs of one line each, as in a glossary, leave only the wider gaps between
them, and the narrowest of those is not the leading: a document with no line set at its leading is left as it was).
A gap under `MIN_LEADING` times the size is no line spacing (a subscript set as a line of its own).

Headings, for a PDF without bookmarks: the lines set larger than the body text (`printed_headings`).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["MIN_LEADING", "MORE_THAN_LEADING", "PrintedLine", "in_reading_order", "paragraphed", "printed_headings"]

MORE_THAN_LEADING = 1.15  # TeX's paragraph skip adds ~23% to the leading; line-to-line jitter is ~1%
MIN_LEADING = 0.9  # times the font size: lines are set at least about their size apart (1.2 is usual)
_RECURS = 0.05  # the leading is a gap that this share of a size's gaps (and at least two) are within 5% of
_OTHER_SIZE = 1.15  # a heading is set 30% or more larger; a size within this ratio is the same text face
_INDENT = 6.0  # times the font size: how far right of the text below it a block drawn out of order may start
_MIN_HEADING, _MAX_HEADING = 2, 150  # characters: a heading names a section; a larger line longer than that is a banner
_MAX_RUNS = 400  # a page drawn in more pieces than this (a chart's labels, a hostile file) is read as drawn: each
# piece is placed by a scan of the page's lines
_SAME_BASELINE = 1.0  # points: two pieces of one visual line that the extractor put on two lines (a table's cells)


@dataclass(frozen=True, kw_only=True)
class PrintedLine:
    """One line of a page's extracted text, with its baseline's height on the page and its font size, in points.

    `baseline` and `size` are None for a line with no printed text (the extractor's blank lines); `left` is where its
    leftmost piece starts, None where unknown.
    """

    text: str
    baseline: float | None = None
    size: float | None = None
    left: float | None = None


def in_reading_order(lines: Sequence[PrintedLine]) -> list[PrintedLine]:
    """The page's lines with each run drawn out of order moved back to where it stands (see the module's docstring)."""
    runs = _runs(lines)
    if not 1 < len(runs) <= _MAX_RUNS:
        return list(lines)
    every_baseline = _sorted_baselines(lines)
    # The runs drawn after the first, cut where the page's other lines stand between two of theirs.
    pieces = runs[:1] + [piece for run in runs[1:] for piece in _pieces(run, every_baseline)]
    if len(pieces) > _MAX_RUNS:
        return list(lines)
    ordered = list(pieces[0])
    for piece in pieces[1:]:
        band = _band(piece)
        if band is None or _between(every_baseline, *band) > _between(_sorted_baselines(piece), *band):  # another line
            ordered += piece
            continue
        below = _nearest_below(ordered, band[0])
        if below is None or not _same_column(piece, ordered[below]):
            ordered += piece
        else:
            ordered[below:below] = piece
    return ordered


def _nearest_below(lines: Sequence[PrintedLine], height: float) -> int | None:
    """Where the highest line under `height` stands in `lines` (the first such, if several share its baseline)."""
    below = [(position[0], -at) for at, line in enumerate(lines) if (position := _position(line)) and position[0] < height]
    return -max(below)[1] if below else None


def _same_column(run: Sequence[PrintedLine], below: PrintedLine) -> bool:
    """Whether the run starts no further right than a code block's or a list's indent from the line it would go before
    (a gap in one column of a two-column page is no place for a piece of the other)."""
    lefts = [line.left for line in run if line.left is not None and _position(line)]
    if not lefts or below.left is None or below.size is None:
        return False
    return min(lefts) <= below.left + _INDENT * below.size


def _runs(lines: Sequence[PrintedLine]) -> list[list[PrintedLine]]:
    """The lines cut wherever the next positioned line stands higher than the last: each run reads down the page."""
    return _cut(lines, lambda above, below: below > above + _SAME_BASELINE)


def _pieces(run: Sequence[PrintedLine], every_baseline: list[float]) -> list[list[PrintedLine]]:
    """The run cut between two consecutive lines of it wherever another line of the page stands between them
    (a browser draws all of a page's code blocks one after the other: each goes back to its own place)."""
    own = _sorted_baselines(run)
    return _cut(run, lambda above, below: _between(every_baseline, below, above) > _between(own, below, above))


def _cut(lines: Sequence[PrintedLine], between: Callable[[float, float], bool]) -> list[list[PrintedLine]]:
    """The lines in consecutive groups, a new one wherever `between(last baseline, next baseline)` of two positioned
    lines in a row holds (unpositioned lines stay in the group they come in)."""
    groups: list[list[PrintedLine]] = []
    last: _Position | None = None
    for line in lines:
        position = _position(line)
        if not groups or (position is not None and last is not None and between(last[0], position[0])):
            groups.append([])
        groups[-1].append(line)
        last = position or last
    return groups


def _sorted_baselines(lines: Sequence[PrintedLine]) -> list[float]:
    return sorted(position[0] for position in map(_position, lines) if position)


def _between(baselines: list[float], low: float, high: float) -> int:
    """How many of the (ascending) baselines lie strictly between low and high."""
    return max(0, bisect_left(baselines, high) - bisect_right(baselines, low))


def _band(run: Sequence[PrintedLine]) -> tuple[float, float] | None:
    """The heights the run covers, from half a line under its lowest baseline to half a line over its highest."""
    positions = [position for position in map(_position, run) if position is not None]
    if not positions:
        return None
    margin = max(size for _, size in positions) / 2
    return min(baseline for baseline, _ in positions) - margin, max(baseline for baseline, _ in positions) + margin


def printed_headings(pages: Sequence[Sequence[PrintedLine]]) -> dict[int, list[str]]:
    """Page number -> the headings printed on it, in order, for a PDF without bookmarks (a browser's print, most
    exports): the lines set larger than the document's body text (its most common size, by characters) and short
    enough to be a title; a heading wrapped over two lines of its size is one."""
    characters: defaultdict[float, int] = defaultdict(int)
    for lines in pages:
        for line in lines:
            if position := _position(line):
                characters[_size_key(position[1])] += len(line.text.strip())
    if not characters:
        return {}
    body = max(characters, key=lambda size: (characters[size], -size))
    headings: dict[int, list[str]] = {}
    for number, lines in enumerate(pages, start=1):
        found: list[str] = []
        above: _Position | None = None
        for line in lines:
            position = _position(line)
            if position is None:
                continue
            text = " ".join(line.text.split())
            if position[1] > _OTHER_SIZE * body and _MIN_HEADING <= len(text) <= _MAX_HEADING and any(map(str.isalpha, text)):
                wrapped = above is not None and found and above[1] == position[1] and 0 < above[0] - position[0] <= 2 * position[1]
                if wrapped and len(found[-1]) + len(text) < _MAX_HEADING:
                    found[-1] += " " + text
                else:
                    found.append(text)
                above = position
            else:
                above = None
        if found:
            headings[number] = found
    return headings


def paragraphed(pages: Sequence[Sequence[PrintedLine]]) -> list[str]:
    """Each page's text, its lines in order, with a blank line wherever a paragraph ends (see the module's docstring)."""
    leading = _leading_by_size(pages)
    texts = []
    for lines in pages:
        parts: list[str] = []
        above: _Position | None = None
        for line in lines:
            position = _position(line)
            if above is not None and position is not None and _paragraph_between(above, position, leading):
                parts.append("")
            parts.append(line.text)
            above = position or above
        texts.append("\n".join(parts))
    return texts


_Position = tuple[float, float]  # a line's baseline and font size


def _position(line: PrintedLine) -> _Position | None:
    """Where the line stands, if the page says so plainly (no position, a zero size, a broken matrix: it does not)."""
    if line.baseline is None or line.size is None:
        return None
    if not (math.isfinite(line.baseline) and math.isfinite(line.size) and line.size > 0):
        return None
    return line.baseline, line.size


def _paragraph_between(above: _Position, below: _Position, leading: dict[float, float]) -> bool:
    (above_baseline, above_size), (below_baseline, below_size) = above, below
    gap = above_baseline - below_baseline  # PDF heights grow upwards
    if abs(gap) <= _SAME_BASELINE:
        return False
    if gap < 0:  # the next line stands higher: another column, a figure's caption, a footnote's order
        return True
    if max(above_size, below_size) > _OTHER_SIZE * min(above_size, below_size):
        return True
    usual = max(leading.get(_size_key(above_size), 0.0), leading.get(_size_key(below_size), 0.0))
    return bool(usual) and gap > MORE_THAN_LEADING * usual


def _leading_by_size(pages: Sequence[Sequence[PrintedLine]]) -> dict[float, float]:
    """Font size -> the gap between two consecutive lines of one paragraph in that size, where the document has one."""
    gaps: dict[float, list[float]] = defaultdict(list)
    for lines in pages:
        positions = [position for position in map(_position, lines) if position is not None]
        for (above_baseline, above_size), (below_baseline, below_size) in zip(positions, positions[1:]):
            gap = above_baseline - below_baseline
            if gap > _SAME_BASELINE and _size_key(above_size) == _size_key(below_size):
                gaps[_size_key(above_size)].append(gap)
    leading = {size: _smallest_recurring(found, size) for size, found in gaps.items()}
    return {size: gap for size, gap in leading.items() if gap is not None}


def _smallest_recurring(gaps: list[float], size: float) -> float | None:
    plausible = sorted(gap for gap in gaps if gap >= MIN_LEADING * size)
    needed = max(2, round(_RECURS * len(plausible)))
    for index, gap in enumerate(plausible):
        if bisect_right(plausible, gap * 1.05) - index >= needed:
            return gap
    return None


def _size_key(size: float) -> float:
    return round(size * 2) / 2  # half points: one face's size varies in its last digits from line to line
