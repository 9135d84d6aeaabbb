"""A search with a reranking stage: the fused ranking's head reordered by a cross-encoder saved to disk, over a real
index and real embeddings; the scope still applied inside the index, the rest of the list in fused order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from processors.retrieval import DocumentRetriever
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.index import IndexedChunk, SearchScope
from projections.search.reranking import CrossEncoderReranker, reranking_text

pytestmark = pytest.mark.slow  # embeds with the real model

ANA = SearchScope(org_id="acme", workspace_id="research", user_id="ana")
QUESTION = "When does the harbour gate close at low tide?"
MINE = [
    "The harbour gate closes two hours before low water.",
    "Spring tides follow the full moon by about two days.",
    "Tides rise and fall twice a day because the moon's gravity pulls the oceans.",
    "Neap tides come at the first and last quarter of the moon.",
    "Low water at the harbour mouth leaves the sandbar dry.",
    "The harbour master posts the gate's hours by the tide table.",
    "Ferries wait outside the gate until the tide turns.",
    "The lighthouse keeper logs every tide in a ledger.",
    "The travel budget for the Lisbon offsite is twelve thousand euros.",
    "Gates of the old harbour were rebuilt in 1910.",
]
# Other tenants' and another user's chunks, all about the question: never candidates, so never reranked in.
FOREIGN = [
    ("globex", "research", "gus", "workspace", "Globex: our harbour gate closes at low tide, two hours before."),
    ("acme", "marketing", "ana", "workspace", "Acme marketing: the harbour gate closes before low tide."),
    ("acme", "research", "bob", "owner", "Bob's notes: the harbour gate closes when the tide is low."),
]


@pytest.fixture
async def index(tmp_path: Path, embedder) -> AsyncIterator[EmbeddedSearchIndex]:
    index = EmbeddedSearchIndex(directory=tmp_path / "search")
    await index.start()
    placed = [("acme", "research", "ana", "workspace", text) for text in MINE] + FOREIGN
    vectors = await embedder.embed([text for *_, text in placed])
    await index.upsert([
        IndexedChunk(chunk_id=f"file_{number}:0", file_id=f"file_{number}", org_id=org, workspace_id=workspace,
                     owner_id=owner, acl=acl, title="Harbour notes", location="", ordinal=0, text=text, vector=vector)
        for number, ((org, workspace, owner, acl, text), vector) in enumerate(zip(placed, vectors, strict=True))
    ])
    try:
        yield index
    finally:
        await index.close()


@pytest.fixture
async def reranker(tiny_cross_encoder) -> AsyncIterator[CrossEncoderReranker]:
    reranker = CrossEncoderReranker(tiny_cross_encoder)
    await reranker.start()
    try:
        yield reranker
    finally:
        await reranker.close()


async def test_the_head_of_the_fused_list_is_reordered_by_the_model_and_the_rest_keeps_its_place(index, embedder, reranker):
    fused = await DocumentRetriever(index=index, embedder=embedder).ranked(ANA, QUESTION, limit=10)
    assert len(fused) == len(MINE) and all(hit.rerank_score is None for hit in fused)
    scores = (await reranker.score(QUESTION, [reranking_text(hit) for hit in fused[:6]])).tolist()
    by_model = [hit.chunk_id for _, hit in sorted(zip(scores, fused[:6]), key=lambda pair: -pair[0])]

    retriever = DocumentRetriever(index=index, embedder=embedder, reranker=reranker, rerank_depth=6)
    ranked = await retriever.ranked(ANA, QUESTION, limit=8)

    assert [hit.chunk_id for hit in ranked] == by_model + [hit.chunk_id for hit in fused[6:8]]
    assert [hit.rerank_score for hit in ranked[:6]] == pytest.approx(sorted(scores, reverse=True))
    assert all(hit.rerank_score is None for hit in ranked[6:])
    assert by_model != [hit.chunk_id for hit in fused[:6]]  # the seeded model does reorder: the test tells the two apart
    assert await retriever.ranked(ANA, QUESTION, limit=8) == ranked  # the same every time


async def test_a_limit_below_the_depth_still_reranks_the_whole_depth(index, embedder, reranker):
    deep = await DocumentRetriever(index=index, embedder=embedder, reranker=reranker, rerank_depth=6).ranked(ANA, QUESTION, limit=6)
    top = await DocumentRetriever(index=index, embedder=embedder, reranker=reranker, rerank_depth=6).ranked(ANA, QUESTION, limit=2)
    assert top == deep[:2]


async def test_nothing_outside_the_scope_is_reranked_in(index, embedder, reranker):
    retriever = DocumentRetriever(index=index, embedder=embedder, reranker=reranker, rerank_depth=50)
    ranked = await retriever.ranked(ANA, QUESTION, limit=50)
    assert {hit.text for hit in ranked} == set(MINE)
    narrowed = await retriever.ranked(SearchScope(org_id="acme", workspace_id="research", user_id="ana",
                                                  file_ids=("file_0", "file_9")), QUESTION, limit=50)
    assert {hit.file_id for hit in narrowed} == {"file_0", "file_9"}


async def test_a_depth_below_one_is_refused(index, embedder, reranker):
    with pytest.raises(ValueError, match="rerank_depth must be at least 1"):
        DocumentRetriever(index=index, embedder=embedder, reranker=reranker, rerank_depth=0)
