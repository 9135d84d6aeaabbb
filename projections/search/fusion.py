"""Reciprocal rank fusion: merge ranked lists by rank alone (scores of different engines never compare)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["DEFAULT_RANK_CONSTANT", "FusedItem", "reciprocal_rank_fusion", "single_list_score"]

DEFAULT_RANK_CONSTANT = 60  # Cormack et al. (2009), and Elasticsearch's default

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True, kw_only=True)
class FusedItem(Generic[Key]):
    """One item of the fused list: its score and its 1-based rank in each input (None: absent)."""

    key: Key
    score: float
    ranks: tuple[int | None, ...]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Key]], *, rank_constant: int = DEFAULT_RANK_CONSTANT
) -> list[FusedItem[Key]]:
    """Every item of the inputs, scored sum(1 / (rank_constant + rank)) over the lists holding it, best first.

    A key repeated within one list counts at its best rank only. Ties keep the order in which
    the items first appear when the lists are read rank by rank (rank 1 of each list, then rank
    2, ...), so the result is deterministic and favours earlier lists.
    """
    if rank_constant < 1:
        raise ValueError(f"rank_constant must be at least 1, got {rank_constant}")
    ranks: dict[Key, list[int | None]] = {}
    for position in range(max((len(ranking) for ranking in rankings), default=0)):
        for list_index, ranking in enumerate(rankings):
            if position >= len(ranking):
                continue
            item_ranks = ranks.setdefault(ranking[position], [None] * len(rankings))
            if item_ranks[list_index] is None:
                item_ranks[list_index] = position + 1
    fused = [
        FusedItem(
            key=key,
            score=sum(1.0 / (rank_constant + rank) for rank in item_ranks if rank is not None),
            ranks=tuple(item_ranks),
        )
        for key, item_ranks in ranks.items()
    ]
    fused.sort(key=lambda item: -item.score)  # stable: ties keep first-appearance order
    return fused


def single_list_score(rank: int, *, rank_constant: int = DEFAULT_RANK_CONSTANT) -> float:
    """The fused score of an item found by one list only, at `rank` (1-based)."""
    return 1.0 / (rank_constant + rank)
