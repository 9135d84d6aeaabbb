"""The `SearchIndex` contract.

Which adapter runs which case:
- Bookkeeping (upsert by chunk id, delete_file, count, an empty file scope, blue/green switch and
  discard) runs on every adapter: the `index` fixture is the embedded index and the Elasticsearch
  adapter talking to the recording HTTP server.
- Ranking and isolation run on the embedded index only. On Elasticsearch both are executed by the
  Elasticsearch server, and none installs on these machines; the recording server answers without
  ranking or filtering, so running these cases against it would test the recorder, not the adapter.
  The Elasticsearch side of isolation (the scope filter inside the BM25 query and inside the kNN
  clause) is asserted on the request bodies in test_elasticsearch.py.

Vectors are real all-MiniLM-L6-v2 embeddings, so "finds by meaning" means what it says.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from projections.search.fusion import DEFAULT_BM25_WEIGHT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.search.elasticsearch import ElasticsearchIndex
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.embedded_fts import scope_token
from projections.search.embedding import MiniLMEmbedder
from projections.search.index import IndexedChunk, SearchHit, SearchIndex, SearchScope

TEXTS = {
    "invoice": "Invoices must be paid within thirty days of receipt; late payments incur a two percent fee.",
    "cafeteria": "The office cafeteria serves a vegetarian lunch menu every Friday.",
    "password": "To reset your password, open account settings and choose the security tab.",
    "autoscaler": "The cluster autoscaler adds worker nodes whenever pods stay pending for too long.",
    "vacation": "Employees accrue twenty-five paid vacation days per calendar year.",
    "warranty": "The warranty covers manufacturing defects for two years from the date of purchase.",
    "firmware": "Model ZX-4419 ships with firmware 2.1; flash updates through the serial console.",
    "parking": "Visitors may park in the north garage after registering at reception.",
}

ALICE = SearchScope(org_id="acme", workspace_id="handbook", user_id="alice")


@pytest.fixture(scope="module")
def text_vectors(embedder: MiniLMEmbedder) -> dict[str, np.ndarray]:
    """Every text this module embeds, embedded once: the corpus and the queries."""
    queries = [
        "how much time off do staff get", "how much time off do staff get (security tab)", "ZX-4419",
        "where can guests leave their car", "my login stopped working",
    ]
    texts = [*TEXTS.values(), *queries]
    return dict(zip(texts, asyncio.run(embedder.embed(texts))))


def make_chunk(
    key: str,
    vectors: dict[str, np.ndarray] | None = None,
    *,
    chunk_id: str | None = None,
    org_id: str = "acme",
    workspace_id: str = "handbook",
    owner_id: str = "alice",
    acl: str = "workspace",
    file_id: str | None = None,
    title: str = "Company handbook",
    text: str | None = None,
    seed: int = 0,
) -> IndexedChunk:
    body = text if text is not None else TEXTS[key]
    vector = vectors[body] if vectors is not None and body in vectors else random_unit(seed)
    return IndexedChunk(
        chunk_id=chunk_id or f"{org_id}/{workspace_id}/{key}",
        file_id=file_id or f"file-{key}",
        org_id=org_id,
        workspace_id=workspace_id,
        owner_id=owner_id,
        acl=acl,  # type: ignore[arg-type]
        title=title,
        location="page 1",
        ordinal=0,
        text=body,
        vector=vector,
    )


def visible(chunk: IndexedChunk | SearchHit, scope: SearchScope) -> bool:
    return (
        chunk.org_id == scope.org_id
        and chunk.workspace_id == scope.workspace_id
        and (chunk.acl == "workspace" or chunk.owner_id == scope.user_id)
        and (scope.file_ids is None or chunk.file_id in scope.file_ids)
    )


def random_unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return vector / np.linalg.norm(vector)


def ids(hits: list[SearchHit]) -> list[str]:
    return [hit.chunk_id for hit in hits]


# -- every adapter: bookkeeping ------------------------------------------------------------------


@pytest.fixture
async def elasticsearch_on_recorder(recording_server) -> AsyncIterator[ElasticsearchIndex]:
    search_index = ElasticsearchIndex(hosts=recording_server.url, replicas=0)
    await search_index.start()
    try:
        yield search_index
    finally:
        await search_index.close()


@pytest.fixture(params=["embedded_index", "elasticsearch_on_recorder"])
def index(request: pytest.FixtureRequest) -> SearchIndex:
    return request.getfixturevalue(request.param)


async def test_upserts_are_counted_per_workspace_and_file(index: SearchIndex) -> None:
    await index.upsert([
        make_chunk("invoice"), make_chunk("vacation", file_id="file-shared"), make_chunk("parking", file_id="file-shared"),
        make_chunk("invoice", workspace_id="legal"), make_chunk("invoice", org_id="globex"),
    ])
    assert await index.count(org_id="acme", workspace_id="handbook") == 3
    assert await index.count(org_id="acme", workspace_id="handbook", file_id="file-shared") == 2
    assert await index.count(org_id="acme", workspace_id="legal") == 1
    assert await index.count(org_id="globex", workspace_id="handbook") == 1
    assert await index.count(org_id="initech", workspace_id="handbook") == 0
    assert await index.has_chunks(org_id="acme", workspace_id="legal")
    assert not await index.has_chunks(org_id="initech", workspace_id="handbook")
    assert not await index.has_chunks(org_id="acme", workspace_id="HANDBOOK")  # exact ids, as every scope
    await index.delete_file(org_id="acme", workspace_id="legal", file_id="file-invoice")
    assert not await index.has_chunks(org_id="acme", workspace_id="legal")


async def test_upsert_is_idempotent_by_chunk_id(index: SearchIndex) -> None:
    chunks = [make_chunk("invoice"), make_chunk("vacation")]
    await index.upsert(chunks)
    await index.upsert(chunks)  # a redelivery
    await index.upsert([replace(chunks[0], text="Invoices are due in sixty days.")])  # a re-extraction
    assert await index.count(org_id="acme", workspace_id="handbook") == 2


async def test_delete_file_removes_that_file_s_chunks_only(index: SearchIndex) -> None:
    await index.upsert([
        make_chunk("invoice", file_id="file-a"), make_chunk("warranty", file_id="file-a"), make_chunk("vacation", file_id="file-b"),
        make_chunk("invoice", workspace_id="legal", file_id="file-a"),
    ])
    assert await index.delete_file(org_id="acme", workspace_id="handbook", file_id="file-a") == 2
    assert await index.delete_file(org_id="acme", workspace_id="handbook", file_id="file-a") == 0
    assert await index.count(org_id="acme", workspace_id="handbook") == 1
    assert await index.count(org_id="acme", workspace_id="legal", file_id="file-a") == 1


async def test_an_empty_file_scope_finds_nothing(index: SearchIndex) -> None:
    await index.upsert([make_chunk("invoice")])
    nothing = replace(ALICE, file_ids=())
    assert await index.search(nothing, text="invoices", vector=random_unit(0)) == []


async def test_a_search_needs_the_query_vector_unless_it_is_bm25_only(index: SearchIndex) -> None:
    for mode in ("hybrid", "vector"):
        with pytest.raises(ValueError):
            await index.search(ALICE, text="invoices", vector=None, mode=mode)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await index.search(ALICE, text="invoices", vector=None, mode="bm25", limit=0)


async def test_readers_see_a_fresh_generation_only_once_it_is_switched_to(index: SearchIndex) -> None:
    await index.upsert([make_chunk("invoice"), make_chunk("vacation")])
    generation = await index.fresh_generation()
    await generation.upsert([make_chunk("invoice"), make_chunk("vacation"), make_chunk("parking")])
    assert await generation.count(org_id="acme", workspace_id="handbook") == 3
    assert await index.count(org_id="acme", workspace_id="handbook") == 2
    await index.switch_to(generation)
    assert await index.count(org_id="acme", workspace_id="handbook") == 3
    await index.upsert([make_chunk("warranty")])  # live writes now land in the new generation
    assert await index.count(org_id="acme", workspace_id="handbook") == 4


async def test_a_discarded_generation_leaves_readers_where_they_were(index: SearchIndex) -> None:
    await index.upsert([make_chunk("invoice")])
    generation = await index.fresh_generation()
    await generation.upsert([make_chunk("vacation"), make_chunk("parking")])
    await index.discard_generation(generation)
    assert await index.count(org_id="acme", workspace_id="handbook") == 1
    next_generation = await index.fresh_generation()
    assert await next_generation.count(org_id="acme", workspace_id="handbook") == 0
    await index.discard_generation(next_generation)


# -- the embedded index: ranking -----------------------------------------------------------------


@pytest.fixture
async def handbook(embedded_index: EmbeddedSearchIndex, text_vectors: dict[str, np.ndarray]) -> EmbeddedSearchIndex:
    await embedded_index.upsert([make_chunk(key, text_vectors) for key in TEXTS])
    return embedded_index


async def test_finds_by_keyword(handbook: EmbeddedSearchIndex, text_vectors: dict[str, np.ndarray]) -> None:
    hits = await handbook.search(ALICE, text="ZX-4419", vector=None, mode="bm25")
    assert ids(hits) == ["acme/handbook/firmware"]
    assert (hits[0].bm25_rank, hits[0].vector_rank) == (1, None)
    assert hits[0].text == TEXTS["firmware"] and hits[0].title == "Company handbook" and hits[0].location == "page 1"


async def test_finds_by_meaning(handbook: EmbeddedSearchIndex, text_vectors: dict[str, np.ndarray]) -> None:
    for query, expected in [("how much time off do staff get", "vacation"), ("where can guests leave their car", "parking"),
                            ("my login stopped working", "password")]:
        hits = await handbook.search(ALICE, text=query, vector=text_vectors[query], mode="vector", limit=3)
        assert hits[0].chunk_id == f"acme/handbook/{expected}"
        assert [hit.vector_rank for hit in hits] == [1, 2, 3] and all(hit.bm25_rank is None for hit in hits)
        # No word of the query is in the chunk: BM25 alone cannot find it.
        keyword_hits = await handbook.search(ALICE, text=query, vector=None, mode="bm25")
        assert f"acme/handbook/{expected}" not in ids(keyword_hits)


async def test_hybrid_fuses_the_keyword_list_and_the_meaning_list(handbook: EmbeddedSearchIndex, text_vectors) -> None:
    query = "how much time off do staff get (security tab)"  # "security tab": password by keyword; vacation by meaning
    hits = await handbook.search(ALICE, text=query, vector=text_vectors[query], limit=3)
    by_id = {hit.chunk_id: hit for hit in hits}
    assert by_id["acme/handbook/password"].bm25_rank == 1
    assert by_id["acme/handbook/vacation"].vector_rank == 1 and by_id["acme/handbook/vacation"].bm25_rank is None
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    for hit in hits:
        # Weighted RRF: the BM25 list counts DEFAULT_BM25_WEIGHT, the vector list 1.
        weights = (DEFAULT_BM25_WEIGHT, 1.0)
        assert hit.score == pytest.approx(
            sum(weight / (60 + rank) for weight, rank in zip(weights, (hit.bm25_rank, hit.vector_rank)) if rank)
        )


async def test_limit_caps_the_hits(handbook: EmbeddedSearchIndex, text_vectors) -> None:
    query = "my login stopped working"
    assert len(await handbook.search(ALICE, text=query, vector=text_vectors[query], limit=2)) == 2
    assert len(await handbook.search(ALICE, text=query, vector=text_vectors[query], limit=100)) == len(TEXTS)


async def test_an_idempotent_upsert_changes_no_answer(handbook: EmbeddedSearchIndex, text_vectors) -> None:
    query = "how much time off do staff get (security tab)"
    before = await handbook.search(ALICE, text=query, vector=text_vectors[query])
    await handbook.upsert([make_chunk(key, text_vectors) for key in TEXTS])
    assert await handbook.search(ALICE, text=query, vector=text_vectors[query]) == before


async def test_a_deleted_file_is_no_longer_found(handbook: EmbeddedSearchIndex, text_vectors) -> None:
    query = "how much time off do staff get"
    await handbook.delete_file(org_id="acme", workspace_id="handbook", file_id="file-vacation")
    for mode in ("hybrid", "bm25", "vector"):
        hits = await handbook.search(ALICE, text=TEXTS["vacation"], vector=text_vectors[query], mode=mode, limit=50)
        assert "acme/handbook/vacation" not in ids(hits)


async def test_file_ids_restrict_the_search_to_those_files(handbook: EmbeddedSearchIndex, text_vectors) -> None:
    scope = replace(ALICE, file_ids=("file-invoice", "file-warranty", "file-of-another-workspace"))
    for mode in ("hybrid", "bm25", "vector"):
        hits = await handbook.search(scope, text="invoices warranty vacation days", vector=text_vectors[TEXTS["vacation"]],
                                     mode=mode, limit=50)
        assert set(ids(hits)) == {"acme/handbook/invoice", "acme/handbook/warranty"}


# -- the embedded index: isolation ---------------------------------------------------------------


@pytest.fixture
async def tenants(embedded_index: EmbeddedSearchIndex, text_vectors) -> EmbeddedSearchIndex:
    """The same texts and vectors in alice's workspace, another workspace, another org, and bob's private files."""
    await embedded_index.upsert(
        [make_chunk("invoice", text_vectors)]
        + [make_chunk(key, text_vectors, workspace_id="legal") for key in TEXTS]
        + [make_chunk(key, text_vectors, org_id="globex") for key in TEXTS]
        + [make_chunk(key, text_vectors, chunk_id=f"bob/{key}", owner_id="bob", acl="owner") for key in TEXTS]
        + [make_chunk("warranty", text_vectors, chunk_id="alice/warranty", acl="owner")]
    )
    return embedded_index


async def test_other_tenants_chunks_never_appear_even_for_their_exact_text(tenants: EmbeddedSearchIndex, text_vectors) -> None:
    for text in TEXTS.values():
        for mode in ("hybrid", "bm25", "vector"):
            hits = await tenants.search(ALICE, text=text, vector=text_vectors[text], mode=mode, limit=50)
            assert all(visible(hit, ALICE) for hit in hits), (text, mode, ids(hits))
            assert set(ids(hits)) <= {"acme/handbook/invoice", "alice/warranty"}


async def test_owner_only_chunks_are_visible_to_their_owner_only(tenants: EmbeddedSearchIndex, text_vectors) -> None:
    bob = replace(ALICE, user_id="bob")
    text = TEXTS["vacation"]
    assert "bob/vacation" in ids(await tenants.search(bob, text=text, vector=text_vectors[text], limit=50))
    assert "bob/vacation" not in ids(await tenants.search(ALICE, text=text, vector=text_vectors[text], limit=50))
    assert "alice/warranty" in ids(await tenants.search(ALICE, text="warranty", vector=None, mode="bm25"))
    assert "alice/warranty" not in ids(await tenants.search(bob, text="warranty", vector=None, mode="bm25"))
    # A file id does not widen what a scope may see.
    scoped = replace(ALICE, file_ids=("file-vacation",))
    assert await tenants.search(scoped, text=text, vector=text_vectors[text], limit=50) == []


async def test_hidden_chunks_do_not_crowd_out_visible_ones(tenants: EmbeddedSearchIndex, text_vectors) -> None:
    # 8 x 3 better matches sit in other scopes; alice's one invoice chunk is still her first hit at limit 1.
    text = TEXTS["invoice"]
    for mode in ("hybrid", "bm25", "vector"):
        (hit,) = await tenants.search(ALICE, text=text, vector=text_vectors[text], mode=mode, limit=1)
        assert hit.chunk_id == "acme/handbook/invoice"


ORGS, WORKSPACES, USERS = ("acme", "globex"), ("handbook", "legal"), ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def crowded_index(tmp_path_factory: pytest.TempPathFactory, text_vectors) -> Iterator[tuple[asyncio.AbstractEventLoop, EmbeddedSearchIndex, list[IndexedChunk]]]:
    """Every text in every org, workspace and ACL (shared; owner-only of alice; of bob), each its own file."""
    generator = random.Random(1)
    chunks = [
        make_chunk(key, text_vectors, chunk_id=f"{org}/{workspace}/{owner}/{acl}/{key}", org_id=org, workspace_id=workspace,
                   owner_id=owner, acl=acl, file_id=f"{org}-{workspace}-{generator.randrange(3)}")
        for org in ORGS for workspace in WORKSPACES for owner, acl in (("carol", "workspace"), ("alice", "owner"), ("bob", "owner"))
        for key in TEXTS
    ]
    loop = asyncio.new_event_loop()
    search_index = EmbeddedSearchIndex(directory=tmp_path_factory.mktemp("crowded"))
    loop.run_until_complete(search_index.start())
    loop.run_until_complete(search_index.upsert(chunks))
    yield loop, search_index, chunks
    loop.run_until_complete(search_index.close())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_isolation_holds_for_any_scope_and_query(crowded_index, data: st.DataObject) -> None:
    loop, search_index, chunks = crowded_index
    file_ids = data.draw(st.none() | st.lists(st.sampled_from(sorted({c.file_id for c in chunks}) + ["no-such-file"]), min_size=1).map(tuple))
    scope = SearchScope(org_id=data.draw(st.sampled_from(ORGS)), workspace_id=data.draw(st.sampled_from(WORKSPACES)),
                        user_id=data.draw(st.sampled_from(USERS)), file_ids=file_ids)
    source = data.draw(st.sampled_from(chunks))  # any tenant's chunk: its exact text and vector as the query
    text = data.draw(st.just(source.text) | st.text(max_size=40) | st.sampled_from(['"', "*", "NEAR(", ")", "-", "OR"]))
    mode = data.draw(st.sampled_from(["hybrid", "bm25", "vector"]))
    limit = data.draw(st.integers(1, 200))
    hits = loop.run_until_complete(search_index.search(scope, text=text, vector=source.vector, limit=limit, mode=mode))
    assert all(visible(hit, scope) for hit in hits)
    if mode == "vector":  # exact search: every visible chunk is a candidate, nothing else is
        expected = {chunk.chunk_id for chunk in chunks if visible(chunk, scope)}
        assert len(hits) == min(limit, len(expected))
        if limit >= len(expected):
            assert set(ids(hits)) == expected


# -- the embedded index: FTS syntax in user text -------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ['"', '"unbalanced', "*", "fox*", "NEAR(fox dog)", "NEAR", "-fox", "fox -dog", "(fox", "fox)", "a AND", "OR", "NOT fox",
     "title:fox", "{title}: fox", "^fox", "fox + dog", "", "   ", "🙂", "\x00", "'; DROP TABLE chunks; --", "fox\"; --"],
)
async def test_user_text_is_never_fts_syntax(embedded_index: EmbeddedSearchIndex, text: str) -> None:
    await embedded_index.upsert([
        make_chunk("a", text="The quick fox sleeps near the old barn and not the house.", seed=1),
        make_chunk("b", text="Foxglove is a poisonous garden plant.", seed=2),
        make_chunk("c", org_id="globex", text="The quick fox of another org.", seed=3),
    ])
    for mode in ("hybrid", "bm25"):
        hits = await embedded_index.search(ALICE, text=text, vector=random_unit(4), mode=mode, limit=50)
        assert all(visible(hit, ALICE) for hit in hits)
    assert await embedded_index.count(org_id="acme", workspace_id="handbook") == 2


async def test_operators_are_searched_as_words(embedded_index: EmbeddedSearchIndex) -> None:
    await embedded_index.upsert([
        make_chunk("a", text="The quick fox sleeps near the old barn.", seed=1),
        make_chunk("b", text="Foxglove is a poisonous garden plant.", seed=2),
    ])

    async def bm25(text: str) -> list[str]:
        return ids(await embedded_index.search(ALICE, text=text, vector=None, mode="bm25"))

    assert await bm25("fox*") == ["acme/handbook/a"]  # no prefix query: foxglove is not found
    assert await bm25("NEAR") == ["acme/handbook/a"]  # the word "near", not the operator
    assert await bm25("-fox") == ["acme/handbook/a"]  # not a negation
    assert await bm25('"') == [] and await bm25("") == []


async def test_another_workspace_s_scope_token_in_the_text_finds_nothing_there(embedded_index: EmbeddedSearchIndex) -> None:
    await embedded_index.upsert([make_chunk("a", workspace_id="legal", text="Confidential settlement terms.", seed=1)])
    token = scope_token("acme", "legal")
    for text in [token, f'scope_token : "{token}"', f"{token} confidential settlement"]:
        assert await embedded_index.search(ALICE, text=text, vector=None, mode="bm25") == []


# -- the embedded index: blue/green --------------------------------------------------------------


async def test_a_rebuilt_generation_answers_like_the_old_one(handbook: EmbeddedSearchIndex, text_vectors) -> None:
    queries = ["how much time off do staff get (security tab)", "ZX-4419", "my login stopped working"]
    before = [await handbook.search(ALICE, text=query, vector=text_vectors[query]) for query in queries]
    generation = await handbook.fresh_generation()
    await generation.upsert([make_chunk(key, text_vectors) for key in reversed(TEXTS)])  # replay order need not match
    await handbook.switch_to(generation)
    assert handbook.generation == "chunks-000002.sqlite3"
    after = [await handbook.search(ALICE, text=query, vector=text_vectors[query]) for query in queries]
    assert [ids(hits) for hits in after] == [ids(hits) for hits in before]
    assert [[hit.score for hit in hits] for hits in after] == [[hit.score for hit in hits] for hits in before]


def repeated_documentation(text_vectors: dict[str, np.ndarray], *, order: list[int]) -> list[IndexedChunk]:
    """The same bytes uploaded twice (two files, one title) and the same passage on another page: ties everywhere."""
    uploads = [("file-b", "Handbook"), ("file-a", "Handbook"), ("file-c", "Benefits")]
    chunks = [
        replace(make_chunk(key, text_vectors, chunk_id=f"{file_id}:{ordinal}", file_id=file_id, title=title), ordinal=ordinal)
        for file_id, title in uploads
        for ordinal, key in enumerate(("vacation", "password", "parking"))
    ]
    return [chunks[position] for position in order]


async def test_equal_scores_rank_the_same_whatever_the_storage_order(tmp_path: Path, text_vectors) -> None:
    """Ties (the same passage in several files) are ordered by title, position, file id: every time, after a rebuild too."""
    query = "how much time off do staff get (security tab)"
    rankings = {}
    for attempt, order in enumerate([list(range(9)), list(reversed(range(9))), random.Random(7).sample(range(9), 9)]):
        index = EmbeddedSearchIndex(directory=tmp_path / f"attempt-{attempt}")
        await index.start()
        try:
            chunks = repeated_documentation(text_vectors, order=order)
            for chunk in chunks:  # one upsert per chunk: row ids follow the storage order
                await index.upsert([chunk])
            for mode in ("hybrid", "bm25", "vector"):
                hits = await index.search(ALICE, text=query, vector=text_vectors[query], mode=mode)
                again = await index.search(ALICE, text=query, vector=text_vectors[query], mode=mode)
                assert ids(again) == ids(hits)
                rankings.setdefault(mode, []).append(ids(hits))
            generation = await index.fresh_generation()
            await generation.upsert(list(reversed(chunks)))
            await index.switch_to(generation)
            rebuilt = await index.search(ALICE, text=query, vector=text_vectors[query])
            assert ids(rebuilt) == rankings["hybrid"][-1]
        finally:
            await index.close()
    for mode, seen in rankings.items():
        assert all(ranking == seen[0] for ranking in seen), mode
    hybrid = rankings["hybrid"][0]
    # The same vacation passage three times: Benefits before Handbook (title), then file-a before file-b.
    assert [chunk_id for chunk_id in hybrid if chunk_id.endswith(":0")] == ["file-c:0", "file-a:0", "file-b:0"]


async def test_readers_see_the_old_generation_or_the_new_one_never_a_mix(tmp_path: Path) -> None:
    live = EmbeddedSearchIndex(directory=tmp_path)
    other_process = EmbeddedSearchIndex(directory=tmp_path)  # another instance on the same directory
    await live.start()
    await other_process.start()
    old = [make_chunk(f"k{n}", chunk_id=f"c{n}", title="generation one", text=f"quarterly report {n}", seed=n) for n in range(30)]
    new = [replace(chunk, title="generation two") for chunk in old] + [
        make_chunk(f"x{n}", chunk_id=f"x{n}", title="generation two", text=f"quarterly report extra {n}", seed=100 + n)
        for n in range(10)
    ]
    await live.upsert(old)
    generation = await live.fresh_generation()
    await generation.upsert(new)
    seen: list[tuple[bool, tuple[str, ...], int]] = []  # (started after the switch, titles, hits)
    switched = asyncio.Event()

    async def read(reader: EmbeddedSearchIndex) -> None:
        rounds_after = 0
        while rounds_after < 3:
            after = switched.is_set()
            rounds_after += after
            hits = await reader.search(ALICE, text="quarterly report", vector=old[0].vector, limit=100)
            seen.append((after, tuple(sorted({hit.title for hit in hits})), len(hits)))

    readers = [asyncio.create_task(read(reader)) for reader in (live, live, other_process, other_process)]
    await asyncio.sleep(0.05)
    await live.switch_to(generation)
    switched.set()
    await asyncio.gather(*readers)
    answers = {(titles, count) for _, titles, count in seen}
    assert answers <= {(("generation one",), 30), (("generation two",), 40)}
    assert (("generation one",), 30) in answers  # reads did run before the switch
    assert {(titles, count) for after, titles, count in seen if after} == {(("generation two",), 40)}
    assert sorted(path.name for path in tmp_path.glob("chunks-*.sqlite3")) == ["chunks-000002.sqlite3"]
    await live.close()
    await other_process.close()
