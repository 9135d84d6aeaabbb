"""Which passages go into a prompt, pure: near-duplicates collapsed to one, then distinct documents first (MMR).

Documentation repeats itself: the same paragraph on several pages took several of a run's few
passage slots, so they covered few distinct documents. Here a passage whose words nearly all
repeat a better-ranked one is folded into it (and noted there, so the prompt can say where else
the text appears), and the rest are ordered by maximal marginal relevance (Carbonell and Goldstein,
1998): each next passage is the one whose relevance, less `diversity` times its redundancy with the
passages already chosen, is highest. Redundancy is word overlap, or `SAME_DOCUMENT` when the
passage is from a document already chosen, whichever is larger. The caller fills its token budget
in this order.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

from projections.search.index import SearchHit

__all__ = ["DEFAULT_DIVERSITY", "DUPLICATE_OVERLAP", "SAME_DOCUMENT", "CollapsedPassage", "collapse_near_duplicates", "diverse_order"]

DUPLICATE_OVERLAP = 0.8  # share of word 3-grams two passages hold in common to count as one
SAME_DOCUMENT = 0.5  # how redundant a passage from an already chosen document counts
DEFAULT_DIVERSITY = 0.25  # 0: relevance order; larger: distinct documents sooner (chosen on development halves, docs/retrieval-quality.md)

_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True, kw_only=True)
class CollapsedPassage:
    """A passage and the near-identical ones folded into it (same text elsewhere), best-ranked first."""

    hit: SearchHit
    duplicates: tuple[SearchHit, ...] = ()


def shingles(text: str, *, size: int = 3) -> frozenset[tuple[str, ...]]:
    """The passage's word `size`-grams, lower-cased (a passage shorter than `size` words is one gram)."""
    words = [word.lower() for word in _WORD.findall(text)]
    if len(words) <= size:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[start : start + size]) for start in range(len(words) - size + 1))


def overlap(first: frozenset, second: frozenset) -> float:
    """How much of the shorter passage the other holds (1.0: one is inside the other)."""
    if not first or not second:
        return 0.0
    return len(first & second) / min(len(first), len(second))


def collapse_near_duplicates(hits: Sequence[SearchHit], *, threshold: float = DUPLICATE_OVERLAP) -> list[CollapsedPassage]:
    """One passage per text: a hit whose 3-grams mostly repeat a better-ranked hit's is folded into it."""
    kept: list[tuple[frozenset, SearchHit, list[SearchHit]]] = []
    seen: set[str] = set()
    for hit in hits:
        if hit.chunk_id in seen:
            continue
        seen.add(hit.chunk_id)
        grams = shingles(hit.text)
        for kept_grams, _, duplicates in kept:
            if overlap(grams, kept_grams) >= threshold:
                duplicates.append(hit)
                break
        else:
            kept.append((grams, hit, []))
    return [CollapsedPassage(hit=hit, duplicates=tuple(duplicates)) for _, hit, duplicates in kept]


def diverse_order(passages: Sequence[CollapsedPassage], *, diversity: float = DEFAULT_DIVERSITY) -> list[CollapsedPassage]:
    """`passages` (best first) reordered by maximal marginal relevance; diversity 0 keeps their order."""
    if diversity <= 0 or len(passages) < 2:
        return list(passages)
    relevance = _relevance([passage.hit for passage in passages])
    grams = [shingles(passage.hit.text) for passage in passages]
    remaining = list(range(len(passages)))
    chosen: list[int] = []
    while remaining:
        def marginal(candidate: int) -> float:
            redundancy = max(
                (
                    max(overlap(grams[candidate], grams[picked]),
                        SAME_DOCUMENT if passages[candidate].hit.file_id == passages[picked].hit.file_id else 0.0)
                    for picked in chosen
                ),
                default=0.0,
            )
            return relevance[candidate] - diversity * redundancy

        best = max(remaining, key=lambda candidate: (marginal(candidate), -candidate))  # ties: the better-ranked
        chosen.append(best)
        remaining.remove(best)
    return [passages[position] for position in chosen]


def _relevance(hits: Sequence[SearchHit]) -> list[float]:
    """Each hit's relevance in (0, 1]: its fused score over the best one (the search's own order, whatever the mode)."""
    best = max(hit.score for hit in hits)
    return [hit.score / best if best > 0 else 1.0 for hit in hits]
