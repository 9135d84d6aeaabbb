"""Retrieval for a run: `file_search`, run by the prompt builder before the model or called by the model as a tool."""

from collections.abc import Sequence

import numpy as np

from kernel import tracing
from kernel.envelope import Actor
from projections.search.embedding import Embedder
from projections.search.index import SearchHit, SearchIndex, SearchScope
from projections.search.reranking import DEFAULT_RERANK_DEPTH, Reranker, reranked, reranking_text
from processors.relevance import RelevanceGate, unmatched_share

# How deep the keyword list is read when the candidates alone cannot decide the relevance gate: the
# index's own BM25 window (`RANK_WINDOW` of both adapters), as the gate was calibrated.
KEYWORD_WINDOW = 50


def scope_of(actor: Actor, file_ids: Sequence[str] = ()) -> SearchScope:
    """Where `actor` searches: as themselves, in their org and workspace, never wider; `file_ids` only narrows it."""
    return SearchScope(
        org_id=actor.org_id, workspace_id=actor.workspace_id, user_id=actor.user_id, file_ids=tuple(file_ids) or None
    )


class DocumentRetriever:
    """Searches one scope (org, workspace, user, optionally some files) for passages about a question."""

    def __init__(
        self, *, index: SearchIndex, embedder: Embedder, candidates: int = 24, gate: RelevanceGate | None = None,
        reranker: Reranker | None = None, rerank_depth: int = DEFAULT_RERANK_DEPTH,
    ) -> None:
        """`candidates`: hits read per search, more than a prompt takes, so duplicates and one document's repeats can give way.

        `reranker`: where given, the fused ranking's best `rerank_depth` hits are reordered by it (the rest follow in
        fused order); the relevance gate still judges by the index's similarities, as it was calibrated.
        """
        if rerank_depth < 1:
            raise ValueError(f"rerank_depth must be at least 1, got {rerank_depth}")
        self._index = index
        self._embedder = embedder
        self._candidates = candidates
        self._gate = gate or RelevanceGate()
        self._reranker = reranker
        self._rerank_depth = rerank_depth

    async def has_documents(self, *, org_id: str, workspace_id: str) -> bool:
        return await self._index.has_chunks(org_id=org_id, workspace_id=workspace_id)

    async def search(self, scope: SearchScope, question: str) -> list[SearchHit]:
        """The passages the relevance gate lets through, best first (none: the documents do not cover it); a span of its own.

        The scope is applied inside the index's queries.
        """
        attributes = {"turnlog.search.candidates": self._candidates, "turnlog.search.file_ids": len(scope.file_ids or ())}
        with tracing.span("retrieval", attributes=attributes) as searching:
            found = await self.ranked(scope, question, limit=self._candidates)
            unmatched = await self._unmatched_share(scope, question, found)
            hits = self._gate.passages(found, unmatched=unmatched)
            if searching.is_recording():
                searching.set_attribute("turnlog.search.hits", len(hits))
                searching.set_attribute("turnlog.search.unmatched_share", round(unmatched, 4))
                best = max((hit.similarity for hit in found if hit.similarity is not None), default=None)
                if best is not None:
                    searching.set_attribute("turnlog.search.best_similarity", round(best, 4))
            return hits

    async def covers_question(self, scope: SearchScope, question: str, hits: Sequence[SearchHit]) -> bool:
        """Whether the relevance gate says `hits` (the index's ranking for `question` in `scope`) are about it: what a turn's search decides."""
        return self._gate.covers(hits, unmatched=await self._unmatched_share(scope, question, hits))

    async def _unmatched_share(self, scope: SearchScope, question: str, hits: Sequence[SearchHit]) -> float:
        """The question's content words in none of `hits`, or where that leaves the gate undecided, in none of them nor the keyword window.

        The keyword window (the index's BM25 list, `KEYWORD_WINDOW` deep) is one more keyword query,
        run only when it can change the verdict (about one search in seven on the benchmark's questions).
        """
        unmatched = unmatched_share(question, hits)
        if not self._gate.undecided(hits, unmatched=unmatched):
            return unmatched
        keyword_window = await self._index.search(scope, text=question, vector=None, limit=KEYWORD_WINDOW, mode="bm25")
        return unmatched_share(question, [*hits, *keyword_window])

    def covers(self, hits: Sequence[SearchHit]) -> bool:
        """Whether `hits` (the index's ranking) pass the relevance gate's similarity stage: its lowest bar, as if every word matched.

        A necessary condition only; `covers_question` is the whole gate, unmatched words included.
        """
        return self._gate.covers(hits)

    async def ranked(self, scope: SearchScope, query: str, *, limit: int) -> list[SearchHit]:
        """The ranking for `query` in `scope`, ungated: the index's, its head reordered by the reranker if there is one;
        what the search API returns."""
        vector: np.ndarray = (await self._embedder.embed([query]))[0]
        if self._reranker is None:
            return await self._index.search(scope, text=query, vector=vector, limit=limit)
        fused = await self._index.search(scope, text=query, vector=vector, limit=max(limit, self._rerank_depth))
        head, rest = fused[: self._rerank_depth], fused[self._rerank_depth :]
        with tracing.span("rerank", attributes={"turnlog.search.rerank_depth": len(head)}):
            scores = await self._reranker.score(query, [reranking_text(hit) for hit in head])
        return [*reranked(head, scores), *rest][:limit]

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the embedding model's tokenizer (the generating model's comes with the router)."""
        return len(self._embedder.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
