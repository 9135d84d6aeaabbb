"""The relevance gate, pure: a real similarity decides, not a shared word; words the documents never use raise the bar."""

import pytest

from processors.relevance import RelevanceGate, unmatched_share
from projections.search.index import SearchHit


def hit(chunk_id: str, *, similarity: float | None, bm25: int | None = None, text: str = "x", title: str = "T",
        location: str = "") -> SearchHit:
    return SearchHit(
        chunk_id=chunk_id, file_id="f", org_id="o", workspace_id="w", owner_id="u", acl="workspace", title=title,
        location=location, ordinal=0, text=text, score=0.01, bm25_rank=bm25, vector_rank=None if similarity is None else 1,
        similarity=similarity,
    )


def test_a_shared_word_is_not_enough() -> None:
    gate = RelevanceGate(min_similarity=0.45, passage_margin=0.1)
    hits = [hit("a", similarity=0.2, bm25=1), hit("b", similarity=0.3)]
    assert not gate.covers(hits) and gate.passages(hits) == []


def test_when_the_best_passage_is_close_the_others_within_the_margin_come_too() -> None:
    gate = RelevanceGate(min_similarity=0.45, passage_margin=0.1)
    hits = [hit("a", similarity=0.5), hit("b", similarity=0.36, bm25=2), hit("c", similarity=0.34, bm25=1)]
    assert [h.chunk_id for h in gate.passages(hits)] == ["a", "b"]


def test_hits_without_a_similarity_cannot_be_judged_and_pass() -> None:
    gate = RelevanceGate()
    assert [h.chunk_id for h in gate.passages([hit("a", similarity=None)])] == ["a"]
    assert gate.passages([hit("a", similarity=None)], unmatched=1.0) != []
    assert gate.passages([]) == []


def test_the_threshold_is_a_cosine_and_the_penalty_is_not_negative() -> None:
    with pytest.raises(ValueError, match="between -1 and 1"):
        RelevanceGate(min_similarity=2.0)
    with pytest.raises(ValueError, match="must not be negative"):
        RelevanceGate(unmatched_penalty=-0.1)


# -- words the passages do not contain ----------------------------------------------------------


def test_unmatched_share_counts_the_question_s_content_words_that_no_passage_contains() -> None:
    # given passages that name "generators" (text), "Yield expressions" (title) and "6.2.9" (location)
    passages = [hit("a", similarity=0.5, text="Generators pause at each yield."), hit("b", similarity=0.4, title="Yield expressions",
                                                                                         location="6.2.9")]
    # when a question's content words are looked up; "how", "do", "I", "a", "in" and "the" are not content words
    # then "pause" and "yield" match (any case, any of title, location and text), "pandas" does not
    assert unmatched_share("How do I pause a generator in pandas?", passages) == pytest.approx(2 / 3)  # "generator" is not "generators"
    assert unmatched_share("How do I pause the Yield?", passages) == 0.0
    assert unmatched_share("pandas", passages) == 1.0
    assert unmatched_share("", passages) == 0.0
    assert unmatched_share("6.2.9", passages) == 0.0  # digits are words too: "6", "2", "9"


def test_the_keyword_window_is_needed_only_when_it_could_change_the_verdict() -> None:
    gate = RelevanceGate(min_similarity=0.40, unmatched_penalty=0.4)
    # given a best passage at 0.45: covered with every word matched, not with half of them unmatched
    assert gate.undecided([hit("a", similarity=0.45)], unmatched=0.5)
    # given one at 0.90: covered even with every word unmatched; one at 0.30: not covered even with none
    assert not gate.undecided([hit("a", similarity=0.90)], unmatched=1.0)
    assert not gate.undecided([hit("a", similarity=0.30)], unmatched=0.5)
    assert not gate.undecided([hit("a", similarity=0.45)], unmatched=0.0)


def test_every_unmatched_word_raises_the_bar() -> None:
    # given a best passage at 0.45 and a gate at 0.40 that rises by 0.4 per unit share of unmatched words
    gate = RelevanceGate(min_similarity=0.40, unmatched_penalty=0.4)
    hits = [hit("a", similarity=0.45)]
    # when every word of the question is in some passage, then it covers
    assert gate.covers(hits, unmatched=0.0) and gate.bar(0.0) == pytest.approx(0.40)
    # when a quarter of them is in none: the bar is 0.50, so it does not
    assert gate.bar(0.25) == pytest.approx(0.50)
    assert not gate.covers(hits, unmatched=0.25) and gate.passages(hits, unmatched=0.25) == []


def test_the_passage_floor_follows_the_raised_bar() -> None:
    gate = RelevanceGate(min_similarity=0.40, unmatched_penalty=0.4, passage_margin=0.1)
    hits = [hit("a", similarity=0.7), hit("b", similarity=0.45), hit("c", similarity=0.35)]
    assert [h.chunk_id for h in gate.passages(hits)] == ["a", "b", "c"]  # floor 0.30
    assert [h.chunk_id for h in gate.passages(hits, unmatched=0.5)] == ["a"]  # bar 0.60, floor 0.50
