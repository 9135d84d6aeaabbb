"""The bound that lets the keyword search leave common words out of what it must match (`maxscore.py`)."""

import math

from hypothesis import given
from hypothesis import strategies as st

from projections.search.maxscore import BM25_K1, first_pass_words, idf_ceiling, word_bound, words_needed


def test_the_idf_is_fts5s_own_with_its_floor() -> None:
    assert idf_ceiling(rows=1000, docs_at_least=10) == math.log((1000 - 10 + 0.5) / (10 + 0.5))
    assert idf_ceiling(rows=1000, docs_at_least=600) == 1e-6  # log of less than 1: FTS5 counts 1e-6
    assert idf_ceiling(rows=0, docs_at_least=0) == 1e-6


@given(st.integers(1, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_a_count_known_only_from_below_never_lowers_the_idf(rows: int, docs: int, more: int) -> None:
    assert idf_ceiling(rows=rows, docs_at_least=docs) >= idf_ceiling(rows=rows, docs_at_least=docs + more)


def test_a_word_adds_at_most_idf_times_k1_plus_one() -> None:
    idf = 2.5
    for frequency in (0.5, 1, 3, 50, 10**6):
        for length_factor in (0.25, 1.0, 4.0):  # 1 - b + b * D / avgdl
            added = idf * frequency * (BM25_K1 + 1) / (frequency + BM25_K1 * length_factor)
            assert added < word_bound(idf)


def test_a_first_pass_takes_the_rarest_words_while_their_chunks_fit() -> None:
    assert first_pass_words([3, 40, 900, 20_000], budget=5_000) == 3
    assert first_pass_words([8_000, 9_000], budget=5_000) == 1  # always at least one
    assert first_pass_words([0, 0, 1], budget=5_000) == 3


def test_without_a_full_window_every_word_is_needed() -> None:
    assert words_needed([9.0, 5.0, 0.5], None) == 3


def test_common_words_are_left_out_while_their_bounds_stay_below_the_threshold() -> None:
    bounds = [9.0, 5.0, 1.5, 0.5]  # rarest first
    assert words_needed(bounds, 6.0) == 2  # 0.5 + 1.5 < 6, adding 5 is not
    assert words_needed(bounds, 2.0) == 3  # 0.5 < 2, 0.5 + 1.5 is not below 2
    assert words_needed(bounds, 0.5) == 4  # equal is not below: a tie could still enter


@given(st.lists(st.floats(0.0, 50.0), min_size=1, max_size=20), st.floats(0.0, 500.0))
def test_the_words_left_out_can_never_reach_the_threshold(bounds: list[float], threshold: float) -> None:
    needed = words_needed(bounds, threshold)
    assert 0 <= needed <= len(bounds)
    assert sum(bounds[needed:]) < threshold or needed == len(bounds)
