"""Grounding, pure: which retrieved passages go into a prompt, and how they are shown.

Passages are numbered `[1]`, `[2]`, ... in the order of their relevance, as many as fit in a token
budget; the model is asked to cite them with those markers and to say so when they do not hold the
answer. After generation the markers become citations (`inference.citations`). A passage the context
safety stage fenced is shown wrapped as untrusted data (`processors/safety/injection.py`), and the message
says what that means.
"""

from collections.abc import Callable, Collection, Sequence

from events.values import Source
from inference.instructions import GROUNDED_INSTRUCTIONS, NOTHING_FOUND_INSTRUCTIONS
from processors.safety.injection import FENCE_INSTRUCTION, fence
from projections.search.index import SearchHit

# A vector-only hit below this cosine similarity is not about the question (all-MiniLM-L6-v2:
# unrelated English sentences score ~0.0-0.2, paraphrases ~0.5 and up).
MIN_SIMILARITY = 0.3


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


def grounding_message(sources: Sequence[Source], *, fenced: Collection[str] = ()) -> str:
    """The prompt's message that carries the passages (or says that none were found); `fenced`: chunk ids shown as untrusted."""
    if not sources:
        return NOTHING_FOUND_INSTRUCTIONS
    warning = f"\n\n{FENCE_INSTRUCTION}" if any(source.chunk_id in fenced for source in sources) else ""
    return f"{GROUNDED_INSTRUCTIONS}{warning}\n\n{passages(sources, fenced=fenced)}"


def passages(sources: Sequence[Source], *, numbered: bool = True, fenced: Collection[str] = ()) -> str:
    """The passages as the model reads them: `[marker] title, location`, then the text; unnumbered, without the marker.

    The text of a passage in `fenced` (by chunk id) is wrapped as untrusted data.
    """
    return "\n\n".join(
        _passage(
            source.marker if numbered else None, source.title, source.location,
            fence(source.text, source=source.chunk_id) if source.chunk_id in fenced else source.text,
        )
        for source in sources
    )


def _passage(marker: int | None, title: str, location: str, text: str) -> str:
    where = f", {location}" if location else ""
    number = f"[{marker}] " if marker is not None else ""
    return f"{number}{title}{where}\n{text}"
