"""Grounding, pure: which retrieved passages go into a prompt, how they are shown, and what an answer cites.

Passages are numbered `[1]`, `[2]`, ... in the order of their relevance, as many as fit in a token
budget; the model is asked to cite them with those markers and to say so when they do not hold the
answer. After generation, the markers in the answer become citations (with a quote of the passage)
and every passage given becomes a source, so any answer can be checked against what it stood on.
"""

import re
from collections.abc import Callable, Sequence

from events.values import Citation, Source
from projections.search.index import SearchHit

# A vector-only hit below this cosine similarity is not about the question (all-MiniLM-L6-v2:
# unrelated English sentences score ~0.0-0.2, paraphrases ~0.5 and up).
MIN_SIMILARITY = 0.3
MAX_QUOTE_CHARS = 300

GROUNDED_INSTRUCTIONS = (
    "Answer from the numbered passages below, taken from the user's documents. After each statement "
    "that uses a passage, cite it with its number in square brackets, like [1]. If the passages do not "
    "contain the answer, say that the documents do not cover it; do not make up an answer."
)
NOTHING_FOUND_INSTRUCTIONS = (
    "The user's documents were searched for this question and nothing relevant was found. Say that "
    "the documents do not cover it, and do not make up an answer from them."
)

_MARKERS = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")
_WORDS = re.compile(r"\w+")


def relevant(hits: Sequence[SearchHit], *, min_similarity: float = MIN_SIMILARITY) -> list[SearchHit]:
    """Hits that share words with the question, or whose meaning is close enough to it.

    Vector search always returns its nearest chunks, however far; without this cut an unrelated
    question would be answered "from the documents".
    """
    return [
        hit
        for hit in hits
        if hit.bm25_rank is not None or hit.similarity is None or hit.similarity >= min_similarity
    ]


def numbered_sources(
    hits: Sequence[SearchHit], *, max_tokens: int, count_tokens: Callable[[str], int], max_sources: int = 8
) -> tuple[Source, ...]:
    """The best hits, numbered from 1, as many as fit in `max_tokens` (a passage never goes in cut)."""
    sources: list[Source] = []
    seen: set[str] = set()
    used = 0
    for hit in hits:
        if hit.chunk_id in seen:
            continue
        cost = count_tokens(_passage(len(sources) + 1, hit.title, hit.location, hit.text))
        if used + cost > max_tokens:
            continue  # a shorter passage further down may still fit
        seen.add(hit.chunk_id)
        used += cost
        sources.append(
            Source(
                marker=len(sources) + 1,
                file_id=hit.file_id,
                chunk_id=hit.chunk_id,
                title=hit.title,
                location=hit.location,
                text=hit.text,
            )
        )
        if len(sources) == max_sources:
            break
    return tuple(sources)


def grounding_message(sources: Sequence[Source]) -> str:
    """The prompt's message that carries the passages (or says that none were found)."""
    if not sources:
        return NOTHING_FOUND_INSTRUCTIONS
    passages = "\n\n".join(_passage(source.marker, source.title, source.location, source.text) for source in sources)
    return f"{GROUNDED_INSTRUCTIONS}\n\n{passages}"


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


def _passage(marker: int, title: str, location: str, text: str) -> str:
    where = f", {location}" if location else ""
    return f"[{marker}] {title}{where}\n{text}"


def _sentence_around(text: str, position: int) -> str:
    start = max(text.rfind(". ", 0, position), text.rfind("\n", 0, position)) + 1
    end = min((index for index in (text.find(". ", position), text.find("\n", position)) if index >= 0), default=len(text))
    return text[start:end]
