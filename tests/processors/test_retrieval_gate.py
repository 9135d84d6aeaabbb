"""The retriever gathers the relevance gate's inputs: the candidates, and the keyword window only where it decides."""

from collections.abc import Sequence

import numpy as np

from processors.relevance import RelevanceGate
from processors.retrieval import KEYWORD_WINDOW, DocumentRetriever
from projections.search.index import SearchHit, SearchScope

SCOPE = SearchScope(org_id="o", workspace_id="w", user_id="u")


def hit(chunk_id: str, *, similarity: float | None, text: str) -> SearchHit:
    return SearchHit(
        chunk_id=chunk_id, file_id="f", org_id="o", workspace_id="w", owner_id="u", acl="workspace", title="Guide",
        ordinal=0, text=text, score=0.01, similarity=similarity,
    )


class ScriptedIndex:
    """An index that answers each mode with fixed hits and records the searches it was asked for."""

    def __init__(self, *, hybrid: Sequence[SearchHit], bm25: Sequence[SearchHit]) -> None:
        self.answers = {"hybrid": list(hybrid), "bm25": list(bm25)}
        self.searches: list[tuple[str, int]] = []

    async def search(self, scope: SearchScope, *, text: str, vector: np.ndarray | None, limit: int = 10,
                     mode: str = "hybrid") -> list[SearchHit]:
        self.searches.append((mode, limit))
        return self.answers[mode][:limit]


class FixedEmbedder:
    async def embed(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.ones(4, dtype=np.float32) / 2 for _ in texts]


def retriever(index: ScriptedIndex) -> DocumentRetriever:
    gate = RelevanceGate(min_similarity=0.40, unmatched_penalty=0.4, passage_margin=0.1)
    return DocumentRetriever(index=index, embedder=FixedEmbedder(), gate=gate)  # type: ignore[arg-type]


async def test_a_question_whose_words_the_candidates_hold_is_judged_on_them_alone() -> None:
    # given candidates that hold "pause" and "generator", the best at 0.45
    index = ScriptedIndex(hybrid=[hit("a", similarity=0.45, text="A generator can pause.")], bm25=[])
    # when searched, then they pass, and no keyword window is read
    assert [h.chunk_id for h in await retriever(index).search(SCOPE, "How do I pause a generator?")] == ["a"]
    assert index.searches == [("hybrid", 24)]


async def test_a_word_only_the_keyword_window_holds_lowers_the_bar_again() -> None:
    # given candidates without "coroutine" (half the content words unmatched: bar 0.60), which the keyword window holds
    index = ScriptedIndex(hybrid=[hit("a", similarity=0.45, text="A generator can pause.")],
                          bm25=[hit("k", similarity=0.2, text="A coroutine is a generator.")])
    # when searched, then the window is read and the candidates pass
    assert [h.chunk_id for h in await retriever(index).search(SCOPE, "generator coroutine")] == ["a"]
    assert index.searches == [("hybrid", 24), ("bm25", KEYWORD_WINDOW)]


async def test_a_word_the_documents_never_use_declines_a_middling_match() -> None:
    # given candidates at 0.45 about asyncio, and no passage anywhere that says "pandas"
    index = ScriptedIndex(hybrid=[hit("a", similarity=0.45, text="Merge two sorted inputs.")],
                          bm25=[hit("k", similarity=0.2, text="Merge sorted inputs lazily.")])
    # when asked about merging pandas frames, then nothing is found
    retrieval = retriever(index)
    assert await retrieval.search(SCOPE, "merge pandas") == []
    assert not await retrieval.covers_question(SCOPE, "merge pandas", index.answers["hybrid"])
    # while the similarity stage alone (the search API's `covered`) would have let it through
    assert retrieval.covers(index.answers["hybrid"])


async def test_a_clear_match_or_a_clear_miss_reads_no_keyword_window() -> None:
    for similarity in (0.95, 0.2):
        index = ScriptedIndex(hybrid=[hit("a", similarity=similarity, text="nothing relevant")], bm25=[])
        await retriever(index).search(SCOPE, "merge pandas")
        assert index.searches == [("hybrid", 24)], similarity
