"""Citations, pure: the passage markers an answer cites become citations, each with a quote of its passage.

Every passage the prompt gave stays a source of the answer, so any answer can be checked against
what it stood on.
"""

import math
import re
from collections.abc import Sequence

from events.values import Citation, Source

MAX_QUOTE_CHARS = 300

_MARKERS = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")
# A blank line, or a line break before a list item ("- ", "* ", "• ", "1. ", "2) ").
_BLOCK_BREAK = re.compile(r"\n\s*\n|\n(?=[ \t]*(?:[-*+\u2022]|\d{1,3}[.)])\s)")
_STOP_WORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the their this to was were will with"
    " i you we they he she my your our do does did not no can".split()
)
_WORDS = re.compile(r"\w+")


def citations_in(answer: str, sources: Sequence[Source]) -> tuple[Citation, ...]:
    """The sources the answer cites by marker, in order of first citation, each with its best-matching quote."""
    by_marker = {source.marker: source for source in sources}
    citations: list[Citation] = []
    cited: set[int] = set()
    for match in _MARKERS.finditer(answer):
        claim = _sentence_around(answer, match.start())
        for marker in (int(number) for number in match.group(1).split(",")):
            source = by_marker.get(marker)
            if source is None or marker in cited:
                continue  # a marker the prompt never gave is not a citation
            cited.add(marker)
            citations.append(
                Citation(
                    marker=marker,
                    file_id=source.file_id,
                    chunk_id=source.chunk_id,
                    title=source.title,
                    location=source.location,
                    quote=best_quote(source.text, claim),
                )
            )
    return tuple(citations)


def best_quote(passage: str, claim: str) -> str:
    """The sentence of the passage that best supports the claim: most shared terms, for its length; the first on a tie.

    A sentence never runs across a paragraph or a list item: the passage is cut into those first
    (an option name on its own line stays apart from the paragraph after it). Terms are content words
    compared by a crude stem, so "rises" supports "rise"; dividing by the square root of one more than the
    sentence's terms keeps a long sentence from winning by size alone.
    """
    sentences = quote_candidates(passage)
    if not sentences:
        return ""
    claim_terms = _terms(claim)

    def support(sentence: str) -> float:
        terms = _terms(sentence)
        return len(claim_terms & terms) / math.sqrt(len(terms) + 1)

    best = " ".join(max(sentences, key=support).split())  # max keeps the first of equals
    return best if len(best) <= MAX_QUOTE_CHARS else best[: MAX_QUOTE_CHARS - 1].rstrip() + "…"


def quote_candidates(passage: str) -> list[str]:
    """The sentences a quote is chosen from: the passage cut into paragraphs and list items, then into sentences."""
    return [sentence for block in _blocks(passage) for sentence in _SENTENCES.split(block) if sentence.strip()]


def _blocks(passage: str) -> list[str]:
    """The passage's paragraphs and list items, each stripped."""
    return [block.strip() for block in _BLOCK_BREAK.split(passage) if block and block.strip()]


def _terms(text: str) -> set[str]:
    words = (word.lower() for word in _WORDS.findall(text))
    return {_stem(word) for word in words if word not in _STOP_WORDS}


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:5]


def _sentence_around(text: str, position: int) -> str:
    start = max(text.rfind(". ", 0, position), text.rfind("\n", 0, position)) + 1
    end = min((index for index in (text.find(". ", position), text.find("\n", position)) if index >= 0), default=len(text))
    return text[start:end]
