"""The relevance gate, pure: a real similarity decides, not a shared word."""

import pytest

from processors.relevance import RelevanceGate
from projections.search.index import SearchHit


def hit(chunk_id: str, *, similarity: float | None, bm25: int | None = None) -> SearchHit:
    return SearchHit(
        chunk_id=chunk_id, file_id="f", org_id="o", workspace_id="w", owner_id="u", acl="workspace", title="T",
        ordinal=0, text="x", score=0.01, bm25_rank=bm25, vector_rank=None if similarity is None else 1, similarity=similarity,
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
    assert gate.passages([]) == []


def test_the_threshold_is_a_cosine() -> None:
    with pytest.raises(ValueError, match="between -1 and 1"):
        RelevanceGate(min_similarity=2.0)
