"""Retrieval for a run: `file_search`, run by the prompt builder before the model or called by the model as a tool."""

from collections.abc import Sequence

import numpy as np

from kernel import tracing
from kernel.envelope import Actor
from projections.search.embedding import Embedder
from projections.search.index import SearchHit, SearchIndex, SearchScope
from processors.relevance import RelevanceGate


def scope_of(actor: Actor, file_ids: Sequence[str] = ()) -> SearchScope:
    """Where `actor` searches: as themselves, in their org and workspace, never wider; `file_ids` only narrows it."""
    return SearchScope(
        org_id=actor.org_id, workspace_id=actor.workspace_id, user_id=actor.user_id, file_ids=tuple(file_ids) or None
    )


class DocumentRetriever:
    """Searches one scope (org, workspace, user, optionally some files) for passages about a question."""

    def __init__(self, *, index: SearchIndex, embedder: Embedder, candidates: int = 24, gate: RelevanceGate | None = None) -> None:
        """`candidates`: hits read per search, more than a prompt takes, so duplicates and one document's repeats can give way."""
        self._index = index
        self._embedder = embedder
        self._candidates = candidates
        self._gate = gate or RelevanceGate()

    async def has_documents(self, *, org_id: str, workspace_id: str) -> bool:
        return await self._index.count(org_id=org_id, workspace_id=workspace_id) > 0

    async def search(self, scope: SearchScope, question: str) -> list[SearchHit]:
        """The passages the relevance gate lets through, best first (none: the documents do not cover it); a span of its own.

        The scope is applied inside the index's queries.
        """
        attributes = {"turnlog.search.candidates": self._candidates, "turnlog.search.file_ids": len(scope.file_ids or ())}
        with tracing.span("retrieval", attributes=attributes) as searching:
            found = await self.ranked(scope, question, limit=self._candidates)
            hits = self._gate.passages(found)
            if searching.is_recording():
                searching.set_attribute("turnlog.search.hits", len(hits))
                best = max((hit.similarity for hit in found if hit.similarity is not None), default=None)
                if best is not None:
                    searching.set_attribute("turnlog.search.best_similarity", round(best, 4))
            return hits

    def covers(self, hits: Sequence[SearchHit]) -> bool:
        """Whether the relevance gate says `hits` (the index's ranking) are about the question."""
        return self._gate.covers(hits)

    async def ranked(self, scope: SearchScope, query: str, *, limit: int) -> list[SearchHit]:
        """The index's ranking for `query` in `scope`, ungated: what the search API returns."""
        vector: np.ndarray = (await self._embedder.embed([query]))[0]
        return await self._index.search(scope, text=query, vector=vector, limit=limit)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the embedding model's tokenizer (the generating model's comes with the router)."""
        return len(self._embedder.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
