"""The search index port: document chunks, scoped hybrid search (BM25 + vectors, RRF), blue/green rebuilds.

Adapters: `projections.search.embedded` (SQLite FTS5 + exact cosine, one machine) and
`projections.search.elasticsearch` (a cluster). `tests/projections/search/test_index_contract.py`
is the contract.

Isolation is part of the contract, not a caller's duty: every search names a `SearchScope`, and
an adapter applies it inside each ranked query (the BM25 query and the vector query), before
ranking. A chunk of another org or workspace, or another user's owner-only chunk, is never a
candidate, so it can neither be returned nor push a visible chunk out of the top results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, Self

import numpy as np

from kernel.errors import Unavailable

__all__ = [
    "ChunkAcl",
    "ChunkRecord",
    "IndexUnavailable",
    "IndexedChunk",
    "SearchHit",
    "SearchIndex",
    "SearchMode",
    "SearchScope",
]

class IndexUnavailable(Unavailable):
    """The search engine could not be reached or is overloaded: a search answers 503 with Retry-After, and an
    ingester's batch is retried from its committed position rather than dead-lettered."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail, retry_after_s=5)


ChunkAcl = Literal["workspace", "owner"]  # every member of the workspace | only `owner_id`
SearchMode = Literal["hybrid", "bm25", "vector"]


@dataclass(frozen=True, kw_only=True)
class ChunkRecord:
    """A chunk of a document and everything that decides who may see it."""

    chunk_id: str  # unique across all tenants (derived from the file id): the upsert key
    file_id: str
    org_id: str
    workspace_id: str
    owner_id: str  # who uploaded the file
    acl: ChunkAcl
    title: str  # the document's title (or file name)
    location: str = ""  # where in the document: "page 3", a heading path; "" when unknown
    ordinal: int  # position of the chunk within its file, from 0
    text: str


@dataclass(frozen=True, kw_only=True)
class IndexedChunk(ChunkRecord):
    """A chunk with its embedding (float32, L2-normalised, the index's dimensions)."""

    vector: np.ndarray = field(compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class SearchHit(ChunkRecord):
    """A chunk found by a search; ranks are 1-based, None where the chunk was not in that list.

    `score` is the reciprocal rank fusion score over the lists the mode ran (for one list:
    1 / (60 + rank)), so scores compare across modes and adapters. An engine that fuses on the
    server without reporting per-list ranks leaves both ranks None. Equal scores are ordered by
    `ordering.tie_break_key` (title, position, file, chunk), never by storage order.
    """

    score: float
    bm25_rank: int | None = None
    vector_rank: int | None = None
    # Cosine similarity to the query vector, where the engine reports it (the relevance gate reads
    # it): the embedded index for every hit, Elasticsearch for its kNN hits.
    similarity: float | None = None
    # The reranker's score where a reranking stage reordered the fused list's head (`reranking.py`); None elsewhere.
    rerank_score: float | None = None


@dataclass(frozen=True, kw_only=True)
class SearchScope:
    """Who searches where: one org's workspace, as one user, optionally within some files.

    `file_ids=None` searches the whole workspace; a tuple restricts the search to those files
    (an empty tuple finds nothing).
    """

    org_id: str
    workspace_id: str
    user_id: str
    file_ids: tuple[str, ...] | None = None


class SearchIndex(Protocol):
    """Document chunks of every tenant, searched one scope at a time."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        """Insert or replace chunks by `chunk_id` (idempotent: replays and redeliveries are safe)."""
        ...

    async def delete_file(self, *, org_id: str, workspace_id: str, file_id: str) -> int:
        """Remove every chunk of one file; returns how many there were."""
        ...

    async def count(self, *, org_id: str, workspace_id: str, file_id: str | None = None) -> int:
        """Chunks held for a workspace (or one of its files), whoever may see them."""
        ...

    async def has_chunks(self, *, org_id: str, workspace_id: str) -> bool:
        """Whether a workspace holds any chunk: what every turn asks before it searches, so cheaper than `count`."""
        ...

    async def search(
        self,
        scope: SearchScope,
        *,
        text: str,
        vector: np.ndarray | None,
        limit: int = 10,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]:
        """The best `limit` chunks visible in `scope`, best first.

        `text` is plain user text (never query syntax); `vector` is its embedding, required
        unless `mode` is "bm25". "hybrid" fuses the BM25 list and the vector list with RRF.
        """
        ...

    async def fresh_generation(self) -> Self:
        """An empty, started index in new storage that readers do not see until `switch_to`.

        A rebuild fills it (re-chunk and re-embed from the log), then switches to it. Dropping
        an unfinished generation: `discard_generation`.
        """
        ...

    async def switch_to(self, generation: Self) -> None:
        """Make `generation` the one every reader of this index sees, atomically, and drop the old one.

        Readers see the old generation or the new one, never a mix. `generation` is closed:
        keep using this index. Writes that reach the old generation while the rebuild runs are
        lost with it, so after switching the rebuild applies the log records appended after the
        position it had read to (upserts and deletes are idempotent: applying one twice is safe).
        """
        ...

    async def discard_generation(self, generation: Self) -> None:
        """Close and delete a generation that will not be switched to."""
        ...
