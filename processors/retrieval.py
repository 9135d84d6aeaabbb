"""Retrieval for a run: `file_search`, run by the prompt builder before the model or called by the model as a tool."""

from collections.abc import Sequence

import numpy as np

from kernel import tracing
from kernel.envelope import Actor
from projections.search.embedding import Embedder
from projections.search.index import SearchHit, SearchIndex, SearchScope
from processors.grounding import relevant


def scope_of(actor: Actor, file_ids: Sequence[str] = ()) -> SearchScope:
    """Where `actor` searches: as themselves, in their org and workspace, never wider; `file_ids` only narrows it."""
    return SearchScope(
        org_id=actor.org_id, workspace_id=actor.workspace_id, user_id=actor.user_id, file_ids=tuple(file_ids) or None
    )


class DocumentRetriever:
    """Searches one scope (org, workspace, user, optionally some files) for passages about a question."""

    def __init__(self, *, index: SearchIndex, embedder: Embedder, candidates: int = 8) -> None:
        self._index = index
        self._embedder = embedder
        self._candidates = candidates

    async def has_documents(self, *, org_id: str, workspace_id: str) -> bool:
        return await self._index.count(org_id=org_id, workspace_id=workspace_id) > 0

    async def search(self, scope: SearchScope, question: str) -> list[SearchHit]:
        """The relevant passages, best first (the scope is applied inside the index's queries); a span of its own."""
        attributes = {"turnlog.search.candidates": self._candidates, "turnlog.search.file_ids": len(scope.file_ids or ())}
        with tracing.span("retrieval", attributes=attributes) as searching:
            vector: np.ndarray = (await self._embedder.embed([question]))[0]
            hits = relevant(await self._index.search(scope, text=question, vector=vector, limit=self._candidates))
            if searching.is_recording():
                searching.set_attribute("turnlog.search.hits", len(hits))
            return hits

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the embedding model's tokenizer (the generating model's comes with the router)."""
        return len(self._embedder.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
