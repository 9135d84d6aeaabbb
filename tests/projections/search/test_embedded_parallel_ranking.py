"""A large workspace's vectors are ranked on a thread of their own while FTS5 scores the keywords, with the same hits.

The threshold (`PARALLEL_RANK_ROWS`) is lowered so that a small real index takes the parallel path; each search
is compared with the same search ranked in place.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import numpy as np
import pytest

from projections.search import embedded_vectors
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.embedded_vectors import WorkspaceVectors, rank_beside
from projections.search.index import IndexedChunk, SearchScope

WORDS = ["index", "query", "file", "table", "row", "stream", "token", "cache", "page", "write"] + [f"w{n}" for n in range(60)]
SCOPES = [
    SearchScope(org_id="org", workspace_id="ws", user_id="alice"),
    SearchScope(org_id="org", workspace_id="ws", user_id="bob"),
    SearchScope(org_id="org", workspace_id="ws", user_id="alice", file_ids=("file-01", "file-07")),
    SearchScope(org_id="org", workspace_id="ws2", user_id="alice"),
]


def unit(generator: np.random.Generator) -> np.ndarray:
    vector = generator.standard_normal(384).astype(np.float32)
    return vector / np.linalg.norm(vector)


def chunks(count: int) -> list[IndexedChunk]:
    generator, vectors = random.Random(3), np.random.default_rng(3)
    made = []
    for number in range(count):
        owner_only = generator.random() < 0.15
        made.append(
            IndexedChunk(
                chunk_id=f"chunk-{number:04d}", file_id=f"file-{number // 30:02d}", org_id="org",
                workspace_id="ws" if number < 500 else "ws2", owner_id="bob" if owner_only else "alice",
                acl="owner" if owner_only else "workspace", title=f"Manual {number // 30}", ordinal=number % 30,
                text=" ".join(generator.choices(WORDS, k=generator.randint(8, 40))), vector=unit(vectors),
            )
        )
    return made


async def test_hybrid_searches_ranked_beside_the_keywords_give_the_hits_ranked_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranked_on: list[str] = []
    rank = WorkspaceVectors.rank

    def recording_rank(self: WorkspaceVectors, *arguments, **keywords):
        ranked_on.append(threading.current_thread().name)
        return rank(self, *arguments, **keywords)

    monkeypatch.setattr(WorkspaceVectors, "rank", recording_rank)
    index = EmbeddedSearchIndex(directory=tmp_path / "search")
    await index.start()
    try:
        await index.upsert(chunks(650))
        generator, vectors = random.Random(8), np.random.default_rng(8)
        queries = [(" ".join(generator.choices(WORDS, k=generator.randint(1, 5))), unit(vectors)) for _ in range(40)]

        async def all_hits() -> list:
            return [
                await index.search(scope, text=text, vector=vector, limit=12, mode="hybrid")
                for scope in SCOPES
                for text, vector in queries
            ]

        in_place = await all_hits()
        assert not any(name.startswith("vector-rank") for name in ranked_on)
        ranked_on.clear()
        monkeypatch.setattr(embedded_vectors, "PARALLEL_RANK_ROWS", 0)
        beside = await all_hits()
        assert ranked_on and all(name.startswith("vector-rank") for name in ranked_on)
        assert beside == in_place
        assert sum(len(hits) for hits in beside) > 1_000
        # A vector-only search has nothing to do meanwhile: ranked in place.
        ranked_on.clear()
        await index.search(SCOPES[0], text="", vector=queries[0][1], mode="vector")
        assert ranked_on and not any(name.startswith("vector-rank") for name in ranked_on)
    finally:
        await index.close()


def test_with_every_ranking_thread_busy_a_search_ranks_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_vectors, "PARALLEL_RANK_ROWS", 0)
    generator = np.random.default_rng(1)
    matrix = np.stack([unit(generator) for _ in range(50)])
    vectors = WorkspaceVectors(
        version=1, size=50, row_ids=np.arange(1, 51, dtype=np.int64), matrix=matrix, shared=np.ones(50, bool),
        owner_codes=np.zeros(50, np.int32), file_codes=np.zeros(50, np.int32), live=np.ones(50, bool),
        owner_code_by_id={"alice": 0}, file_code_by_id={"file": 0},
    )
    scope, query = SCOPES[0], matrix[7]
    expected = vectors.rank(scope, query, window=5)
    assert expected[0][0] == 8
    taken = 0
    while embedded_vectors._free_ranking_threads.acquire(blocking=False):
        taken += 1
    try:
        ranking = rank_beside(vectors, scope, query, window=5, alone=False)
        assert ranking.done() and ranking.result() == expected
    finally:
        for _ in range(taken):
            embedded_vectors._free_ranking_threads.release()
    ranking = rank_beside(vectors, scope, query, window=5, alone=False)
    assert ranking.result(timeout=60) == expected
