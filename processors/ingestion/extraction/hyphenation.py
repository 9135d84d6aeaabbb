"""Words a typesetter broke at a line's end ("manip-" / "ulation"), joined again.

TeX and other typesetters hyphenate to fill lines, and a PDF's text keeps the break: the index would hold "manip" and
"ulation", a search for "manipulation" would not find that line, and a quote would show the break. A hyphen at a line's
end is the typesetter's when the word without it is one the document uses elsewhere; otherwise it is the writer's
("well-" / "known": the document never writes "wellknown"), and only the line break goes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["rejoined_words"]

_BROKEN = re.compile(r"([^\W\d_]+)-\n([^\W\d_]+)")  # letters, a hyphen ending the line, letters opening the next
_WORD = re.compile(r"[^\W\d_]+")


def rejoined_words(pages: Sequence[str]) -> list[str]:
    """Each page with its line-end hyphenations joined; the document's own words (on every page) decide each one."""
    vocabulary = {word.casefold() for page in pages for word in _WORD.findall(_BROKEN.sub(" ", page))}

    def join(match: re.Match[str]) -> str:
        head, tail = match.groups()
        return head + tail if (head + tail).casefold() in vocabulary else f"{head}-{tail}"

    return [_BROKEN.sub(join, page) for page in pages]
