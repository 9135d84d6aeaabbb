"""Citations, pure: the passage markers an answer cites become citations, each with a quote of its passage.

Every passage the prompt gave stays a source of the answer, so any answer can be checked against
what it stood on.
"""

import re
from collections.abc import Sequence

from events.values import Citation, Source

MAX_QUOTE_CHARS = 300

_MARKERS = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")
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
    """The passage's sentence that shares most words with the claim (the first one on a tie)."""
    sentences = [sentence.strip() for sentence in _SENTENCES.split(passage.strip()) if sentence.strip()]
    if not sentences:
        return ""
    claim_words = {word.lower() for word in _WORDS.findall(claim)}
    best = max(sentences, key=lambda sentence: len(claim_words & {word.lower() for word in _WORDS.findall(sentence)}))
    return best if len(best) <= MAX_QUOTE_CHARS else best[: MAX_QUOTE_CHARS - 1].rstrip() + "…"


def _sentence_around(text: str, position: int) -> str:
    start = max(text.rfind(". ", 0, position), text.rfind("\n", 0, position)) + 1
    end = min((index for index in (text.find(". ", position), text.find("\n", position)) if index >= 0), default=len(text))
    return text[start:end]
