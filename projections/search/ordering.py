"""Deterministic ranking: equal scores are ordered by what the chunk is, never by when it was stored.

Documentation repeats itself, so the same passage on several pages gets the same BM25 score and the
same vector; ordered by storage position (row id, shard, insertion), such ties changed places when
the same bytes were uploaded again or the index was rebuilt. Every ranked list (BM25, vectors, the
fused list, for every adapter) sorts by score first, then by `tie_break_key`: the document's title,
the chunk's position in it, then the file and chunk ids. Scores are compared after rounding, so
that two dot products of the same vector that differ in the last bit (BLAS blocking) still tie.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = ["SCORE_DIGITS", "comparable_score", "stable_ranking", "tie_break_key"]

SCORE_DIGITS = 6  # float32 cosines agree to about 1e-7; BM25 and RRF scores are far coarser

Item = TypeVar("Item")


def comparable_score(score: float) -> float:
    """The score as ties are judged: rounded, so last-bit noise does not decide an order."""
    return round(float(score), SCORE_DIGITS)


def tie_break_key(*, title: str, ordinal: int, file_id: str, chunk_id: str) -> tuple[str, int, str, str]:
    """What orders chunks of equal score: content first (title, position), then ids (same bytes uploaded twice)."""
    return (title, ordinal, file_id, chunk_id)


def stable_ranking(
    items: Iterable[Item], *, score: Callable[[Item], float], key: Callable[[Item], tuple], higher_is_better: bool = True
) -> list[Item]:
    """`items` best first by score, ties by `key` (ascending): the same inputs give the same order, however they arrived."""
    sign = -1.0 if higher_is_better else 1.0
    return sorted(items, key=lambda item: (sign * comparable_score(score(item)), key(item)))
