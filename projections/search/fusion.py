"""Reciprocal rank fusion: merge ranked lists by rank alone (scores of different engines never compare)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from projections.search.ordering import comparable_score, stable_ranking

__all__ = ["DEFAULT_BM25_WEIGHT", "DEFAULT_RANK_CONSTANT", "FusedItem", "reciprocal_rank_fusion", "single_list_score"]

DEFAULT_RANK_CONSTANT = 60  # Cormack et al. (2009), and Elasticsearch's default
# How much the BM25 list counts against the vector list (1.0) in hybrid fusion. Chosen on the
# development half of the retrieval evaluation set and checked on the held-out half
# (docs/retrieval-quality.md): on questions asked as users ask, the vector list is the better one.
DEFAULT_BM25_WEIGHT = 0.3

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True, kw_only=True)
class FusedItem(Generic[Key]):
    """One item of the fused list: its score and its 1-based rank in each input (None: absent)."""

    key: Key
    score: float
    ranks: tuple[int | None, ...]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Key]],
    *,
    rank_constant: int = DEFAULT_RANK_CONSTANT,
    weights: Sequence[float] | None = None,
    tie_break: Callable[[Key], tuple] | None = None,
) -> list[FusedItem[Key]]:
    """Every item of the inputs, scored sum(weight / (rank_constant + rank)) over the lists holding it, best first.

    `weights` (one per list, default 1.0 each) let a list that is known to be stronger count
    more (weighted RRF). A key repeated within one list counts at its best rank only. Ties are
    ordered by `tie_break(key)` when given (what the chunk is: `ordering.tie_break_key`); else
    they keep the order in which the items first appear when the lists are read rank by rank
    (rank 1 of each list, then rank 2, ...), which favours earlier lists.
    """
    if rank_constant < 1:
        raise ValueError(f"rank_constant must be at least 1, got {rank_constant}")
    weights = tuple(weights) if weights is not None else (1.0,) * len(rankings)
    if len(weights) != len(rankings) or any(weight < 0 for weight in weights):
        raise ValueError(f"need one non-negative weight per list, got {weights} for {len(rankings)} lists")
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
            score=sum(
                weight / (rank_constant + rank) for weight, rank in zip(weights, item_ranks) if rank is not None
            ),
            ranks=tuple(item_ranks),
        )
        for key, item_ranks in ranks.items()
    ]
    if tie_break is None:
        fused.sort(key=lambda item: -comparable_score(item.score))  # stable: ties keep first-appearance order
        return fused
    return stable_ranking(fused, score=lambda item: item.score, key=lambda item: tie_break(item.key))


def single_list_score(rank: int, *, rank_constant: int = DEFAULT_RANK_CONSTANT) -> float:
    """The fused score of an item found by one list only, at `rank` (1-based)."""
    return 1.0 / (rank_constant + rank)
