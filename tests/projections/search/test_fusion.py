"""Reciprocal rank fusion, alone."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.search.fusion import FusedItem, reciprocal_rank_fusion, single_list_score


def test_an_item_in_both_lists_beats_items_in_one() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["d", "c", "e"]])
    assert fused[0] == FusedItem(key="c", score=1 / 63 + 1 / 62, ranks=(3, 2))
    assert [item.key for item in fused] == ["c", "a", "d", "b", "e"]


def test_scores_follow_the_formula_with_the_rank_constant() -> None:
    fused = reciprocal_rank_fusion([["x", "y"], ["y"]], rank_constant=1)
    assert {item.key: item.score for item in fused} == {"x": 1 / 2, "y": 1 / 3 + 1 / 2}
    assert {item.key: item.ranks for item in fused} == {"x": (1, None), "y": (2, 1)}


def test_ties_keep_the_order_of_first_appearance_rank_by_rank() -> None:
    # a and b both sit at rank 1 of one list: the earlier list's comes first.
    assert [item.key for item in reciprocal_rank_fusion([["a"], ["b"]])] == ["a", "b"]
    assert [item.key for item in reciprocal_rank_fusion([["b"], ["a"]])] == ["b", "a"]


def test_a_repeated_key_counts_once_at_its_best_rank() -> None:
    (item,) = reciprocal_rank_fusion([["a", "a", "a"]])
    assert item == FusedItem(key="a", score=single_list_score(1), ranks=(1,))


def test_empty_inputs() -> None:
    assert reciprocal_rank_fusion([]) == []
    assert reciprocal_rank_fusion([[], []]) == []


def test_the_rank_constant_must_be_positive() -> None:
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], rank_constant=0)


@given(st.lists(st.lists(st.integers(0, 30), max_size=20), max_size=4))
def test_every_item_appears_once_scored_by_its_ranks_best_first(rankings: list[list[int]]) -> None:
    fused = reciprocal_rank_fusion(rankings)
    assert sorted(item.key for item in fused) == sorted({key for ranking in rankings for key in ranking})
    assert [item.score for item in fused] == sorted((item.score for item in fused), reverse=True)
    for item in fused:
        for ranking, rank in zip(rankings, item.ranks):
            assert rank == (ranking.index(item.key) + 1 if item.key in ranking else None)
        assert item.score == pytest.approx(sum(1 / (60 + rank) for rank in item.ranks if rank is not None))


def test_weights_scale_each_lists_contribution() -> None:
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], rank_constant=1, weights=(0.25, 1.0))
    assert [item.key for item in fused] == ["b", "a"]  # the second list counts more
    assert fused[0].score == pytest.approx(0.25 / 3 + 1 / 2) and fused[1].score == pytest.approx(0.25 / 2 + 1 / 3)
    with pytest.raises(ValueError, match="one non-negative weight per list"):
        reciprocal_rank_fusion([["a"], ["a"]], weights=(1.0,))


def test_ties_are_ordered_by_the_tie_break_not_by_arrival() -> None:
    # "b" and "a" tie (rank 1 of one list each, equal weights); so do "d" and "c".
    for rankings in ([["b", "d"], ["a", "c"]], [["a", "c"], ["b", "d"]]):
        fused = reciprocal_rank_fusion(rankings, tie_break=lambda key: (key,))
        assert [item.key for item in fused] == ["a", "b", "c", "d"]


def test_stable_ranking_treats_last_bit_differences_as_ties() -> None:
    from projections.search.ordering import stable_ranking

    scores = {"late": 0.8123456789, "early": 0.8123456788, "low": 0.5}
    assert stable_ranking(scores, score=scores.__getitem__, key=lambda key: (key,)) == ["early", "late", "low"]
    assert stable_ranking(scores, score=scores.__getitem__, key=lambda key: (key,), higher_is_better=False)[0] == "low"
