"""Grounding, pure: which retrieved passages go into a prompt, and how they are shown.

Passages are numbered `[1]`, `[2]`, ... in the order `passage_selection` gives them (near-duplicates
collapsed, distinct documents first), as many as fit in a token budget; the model is asked to cite
them with those markers and to say so when they do not hold the answer. After generation the markers become citations (`inference.citations`). A passage the context
safety stage fenced is shown wrapped as untrusted data (`processors/safety/injection.py`), and the message
says what that means.
"""

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from events.values import Source
from inference.instructions import GROUNDED_INSTRUCTIONS, NOTHING_FOUND_INSTRUCTIONS
from processors.passage_selection import DEFAULT_DIVERSITY, collapse_near_duplicates, diverse_order
from processors.safety.injection import FENCE_INSTRUCTION, fence
from projections.search.index import SearchHit

DEFAULT_MAX_SOURCES = 8  # passages a prompt carries at most (`--max-sources`)
DEFAULT_SOURCE_TOKENS = 1_500  # tokens they may take together (`--source-tokens`)


@dataclass(frozen=True, kw_only=True)
class ChosenPassages:
    """The passages for a prompt, numbered, and where else each one's text appears (near-duplicates collapsed into it)."""

    sources: tuple[Source, ...] = ()
    also_in: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # chunk id -> "title, location" of each duplicate


def choose_passages(
    hits: Sequence[SearchHit],
    *,
    max_tokens: int,
    count_tokens: Callable[[str], int],
    max_sources: int = DEFAULT_MAX_SOURCES,
    diversity: float = DEFAULT_DIVERSITY,
) -> ChosenPassages:
    """The hits as numbered passages: near-duplicates collapsed, distinct documents first (MMR), as many as fit.

    At most `max_sources`, together within `max_tokens` (a passage never goes in cut; a shorter one
    further down may still fit).
    """
    sources: list[Source] = []
    also_in: dict[str, tuple[str, ...]] = {}
    used = 0
    for passage in diverse_order(collapse_near_duplicates(hits), diversity=diversity):
        hit = passage.hit
        elsewhere = tuple(_where(duplicate.title, duplicate.location) for duplicate in passage.duplicates)
        cost = count_tokens(_passage(len(sources) + 1, hit.title, hit.location, hit.text, elsewhere))
        if used + cost > max_tokens:
            continue
        used += cost
        sources.append(
            Source(
                marker=len(sources) + 1, file_id=hit.file_id, chunk_id=hit.chunk_id, title=hit.title, location=hit.location,
                text=hit.text,
            )
        )
        if elsewhere:
            also_in[hit.chunk_id] = elsewhere
        if len(sources) == max_sources:
            break
    return ChosenPassages(sources=tuple(sources), also_in=also_in)


def numbered_sources(
    hits: Sequence[SearchHit], *, max_tokens: int, count_tokens: Callable[[str], int], max_sources: int = DEFAULT_MAX_SOURCES
) -> tuple[Source, ...]:
    """The passages `choose_passages` picks, without the notes of where else their text appears."""
    return choose_passages(hits, max_tokens=max_tokens, count_tokens=count_tokens, max_sources=max_sources).sources


def grounding_message(
    sources: Sequence[Source], *, fenced: Collection[str] = (), also_in: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The prompt's message that carries the passages (or says that none were found); `fenced`: chunk ids shown as untrusted."""
    if not sources:
        return NOTHING_FOUND_INSTRUCTIONS
    warning = f"\n\n{FENCE_INSTRUCTION}" if any(source.chunk_id in fenced for source in sources) else ""
    return f"{GROUNDED_INSTRUCTIONS}{warning}\n\n{passages(sources, fenced=fenced, also_in=also_in)}"


def passages(
    sources: Sequence[Source], *, numbered: bool = True, fenced: Collection[str] = (), also_in: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The passages as the model reads them: `[marker] title, location`, then the text; unnumbered, without the marker.

    The text of a passage in `fenced` (by chunk id) is wrapped as untrusted data; a passage whose
    text also appears elsewhere (`also_in`, by chunk id) says where.
    """
    return "\n\n".join(
        _passage(
            source.marker if numbered else None, source.title, source.location,
            fence(source.text, source=source.chunk_id) if source.chunk_id in fenced else source.text,
            tuple((also_in or {}).get(source.chunk_id, ())),
        )
        for source in sources
    )


def _where(title: str, location: str) -> str:
    return f"{title}, {location}" if location else title


def _passage(marker: int | None, title: str, location: str, text: str, also_in: Sequence[str] = ()) -> str:
    number = f"[{marker}] " if marker is not None else ""
    elsewhere = f" (the same text is also in: {'; '.join(also_in)})" if also_in else ""
    return f"{number}{_where(title, location)}{elsewhere}\n{text}"
