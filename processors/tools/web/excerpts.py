"""Which passage of a page to quote for a query, pure: the paragraph that shares the most words with it.

Deliberately simple and explainable: the query's words (lower case, without common English words, one
common ending cut: `-ing`, `-ed`, `-es`, `-e`, `-s`) are looked up in each paragraph; the paragraph holding the most distinct ones wins
(then the one holding them most often, then the earliest), and the paragraphs after it are added while
the passage stays within `max_chars`. A paragraph longer than that is split at sentence ends first. A
page that shares no word with the query is quoted from its beginning.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_MAX_CHARS = 800
_WORD = re.compile(r"\w+")
_ENDINGS = ("ing", "ed", "es", "e", "s")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_COMMON_WORDS = frozenset(
    "a an and are as at be by can do does for from has have how in is it its of on or that the their this to "
    "was were what when where which who why will with".split()
)


@dataclass(frozen=True, kw_only=True)
class Passage:
    """The quoted text, and the index of the piece it starts at (stable for a page and a `max_chars`)."""

    index: int
    text: str


def query_terms(text: str) -> frozenset[str]:
    """The words of a query that say what it is about."""
    return frozenset(term for term in map(_term, _WORD.findall(text)) if term not in _COMMON_WORDS and len(term) > 1)


def best_passage(paragraphs: Sequence[str], query: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> Passage | None:
    """The passage of `paragraphs` (in reading order) to quote for `query`, at most `max_chars`; None if there is no text."""
    pieces = [piece for paragraph in paragraphs for piece in _pieces(paragraph.strip(), max_chars)]
    if not pieces:
        return None
    terms = query_terms(query)

    def score(index: int) -> tuple[int, int, int]:
        counts = Counter(term for term in map(_term, _WORD.findall(pieces[index])) if term in terms)
        return len(counts), sum(counts.values()), -index

    best = max(range(len(pieces)), key=score)
    if score(best)[0] == 0:
        best = 0  # nothing on the page matches: its beginning says best what it is
    quoted = [pieces[best]]
    size = len(pieces[best])
    for piece in pieces[best + 1 :]:
        if size + 2 + len(piece) > max_chars:
            break
        quoted.append(piece)
        size += 2 + len(piece)
    return Passage(index=best, text="\n\n".join(quoted))


def _term(word: str) -> str:
    """A word with one common English ending cut (a crude stem): cause, causes, caused -> caus; tides, tide -> tid."""
    word = word.lower()
    if word.endswith("ss"):
        return word
    for ending in _ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[: -len(ending)]
    return word


def _pieces(paragraph: str, max_chars: int) -> list[str]:
    """A paragraph as pieces of at most `max_chars`: whole if it fits, else runs of sentences (a sentence too long is cut)."""
    if len(paragraph) <= max_chars:
        return [paragraph] if paragraph else []
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        if len(sentence) > max_chars:
            sentence = sentence[: max_chars - 1].rsplit(" ", 1)[0] + "…"
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = ""
        current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces
