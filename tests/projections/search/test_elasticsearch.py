"""The Elasticsearch adapter: its request bodies (pure functions) and its HTTP wiring through the official
async client against `recording_elasticsearch.py`. No Elasticsearch server runs here, so these tests show
what is sent and how answers are read, not how Elasticsearch ranks or filters."""

import numpy as np
import pytest

from projections.search.fusion import DEFAULT_BM25_WEIGHT
from elasticsearch import NotFoundError

from projections.search.elasticsearch import (
    DEFAULT_ALIAS,
    ElasticsearchIndex,
    alias_swap_actions,
    bm25_query,
    chunk_document,
    hybrid_search_body,
    index_body,
    knn_clause,
    scope_filter,
    search_body,
)
from kernel.errors import Unavailable
from projections.search.index import IndexedChunk, IndexUnavailable, SearchScope

SCOPE = SearchScope(org_id="org-a", workspace_id="ws-1", user_id="alice")
VISIBLE_TO_ALICE = [
    {"term": {"org_id": "org-a"}},
    {"term": {"workspace_id": "ws-1"}},
    {"bool": {"should": [{"term": {"acl": "workspace"}}, {"term": {"owner_id": "alice"}}], "minimum_should_match": 1}},
]


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return vector / np.linalg.norm(vector)


def chunk(chunk_id: str, *, file_id: str = "file-1", acl: str = "workspace", seed: int = 0) -> IndexedChunk:
    return IndexedChunk(
        chunk_id=chunk_id, file_id=file_id, org_id="org-a", workspace_id="ws-1", owner_id="alice", acl=acl,
        title="Handbook", location="page 2", ordinal=3, text=f"text of {chunk_id}", vector=unit(seed),
    )


# -- bodies --------------------------------------------------------------------------------------


def test_the_mapping_is_strict_with_keyword_scope_fields_english_text_and_a_cosine_vector() -> None:
    body = index_body(dimensions=384, shards=2, replicas=1)
    assert body["settings"] == {"index": {"number_of_shards": 2, "number_of_replicas": 1}}
    properties = body["mappings"]["properties"]
    assert body["mappings"]["dynamic"] == "strict"
    for name in ("chunk_id", "file_id", "org_id", "workspace_id", "owner_id", "acl"):
        assert properties[name] == {"type": "keyword"}
    for name in ("title", "location", "text"):
        assert properties[name] == {"type": "text", "analyzer": "english"}
    assert properties["vector"] == {"type": "dense_vector", "dims": 384, "index": True, "similarity": "cosine"}
    assert set(properties) == {*chunk_document(chunk("c")).keys()}


def test_a_generation_being_filled_has_refresh_off() -> None:
    assert index_body(dimensions=384, shards=1, replicas=0, refresh_interval="-1")["settings"]["index"]["refresh_interval"] == "-1"


def test_the_scope_filter_names_org_workspace_acl_and_files() -> None:
    assert scope_filter(SCOPE) == VISIBLE_TO_ALICE
    scoped = SearchScope(org_id="org-a", workspace_id="ws-1", user_id="alice", file_ids=("f1", "f2"))
    assert scope_filter(scoped) == [*VISIBLE_TO_ALICE, {"terms": {"file_id": ["f1", "f2"]}}]


def test_bm25_reads_the_text_as_plain_words_inside_the_filter() -> None:
    query = bm25_query(SCOPE, 'How do I title:"x" AND y* NEAR(z) -w?')
    assert query == {
        "bool": {
            # Words only (question words left out): no query syntax survives.
            "must": [{"multi_match": {"query": "title x and y near z w", "fields": ["title^0.5", "location", "text"],
                                      "type": "best_fields", "operator": "or"}}],
            "filter": VISIBLE_TO_ALICE,
        }
    }
    assert "query_string" not in str(query) and "simple_query_string" not in str(query)


def test_knn_filters_during_the_vector_search() -> None:
    clause = knn_clause(SCOPE, unit(1), k=50)
    assert clause["filter"] == {"bool": {"filter": VISIBLE_TO_ALICE}}
    assert clause["field"] == "vector" and clause["k"] == 50 and clause["num_candidates"] == 100
    assert np.allclose(clause["query_vector"], unit(1)) and len(clause["query_vector"]) == 384


def test_hybrid_is_one_rrf_retriever_with_the_filter_inside_both_retrievers() -> None:
    body = hybrid_search_body(SCOPE, text="holiday policy", vector=unit(1), limit=10)
    rrf = body["retriever"]["rrf"]
    standard, knn = rrf["retrievers"]
    assert standard == {"standard": {"query": bm25_query(SCOPE, "holiday policy")}}
    assert knn == {"knn": knn_clause(SCOPE, unit(1), k=50)}
    assert rrf["rank_constant"] == 60 and rrf["rank_window_size"] == 50
    # the rrf score says nothing of similarity: the vectors come back so the relevance gate can judge the hits
    assert body["size"] == 10 and "vector" in body["_source"]["includes"] and "text" in body["_source"]["includes"]
    assert "query" not in body and "knn" not in body  # nothing outside the retrievers could bypass the filter


def test_single_list_bodies() -> None:
    assert search_body(SCOPE, text="q", vector=None, size=5, list_name="bm25")["query"] == bm25_query(SCOPE, "q")
    assert search_body(SCOPE, text="q", vector=unit(2), size=5, list_name="vector")["knn"] == knn_clause(SCOPE, unit(2), k=5)


def test_the_alias_moves_in_one_call_that_fails_if_someone_moved_it_first() -> None:
    assert alias_swap_actions(alias="turnlog-chunks", old_index="turnlog-chunks-000001", new_index="turnlog-chunks-000002") == [
        {"remove": {"index": "turnlog-chunks-000001", "alias": "turnlog-chunks", "must_exist": True}},
        {"add": {"index": "turnlog-chunks-000002", "alias": "turnlog-chunks"}},
    ]


# -- wiring --------------------------------------------------------------------------------------


async def test_start_creates_the_first_generation_behind_the_alias_once(elasticsearch_index: ElasticsearchIndex, recording_server) -> None:
    (create,) = recording_server.calls("PUT", "/turnlog-chunks-000001")
    assert create.body["aliases"] == {DEFAULT_ALIAS: {}}
    assert create.body["mappings"] == index_body(dimensions=384, shards=1, replicas=0)["mappings"]
    again = ElasticsearchIndex(hosts=recording_server.url)
    await again.start()
    await again.close()
    assert len(recording_server.calls("PUT", "/turnlog-chunks-000001")) == 1
    assert recording_server.aliased(DEFAULT_ALIAS) == ["turnlog-chunks-000001"]


async def test_a_process_that_loses_the_race_to_create_the_first_generation_uses_it(recording_server) -> None:
    # Another process creates the first index and alias between this one's alias check and its create.
    recording_server.interpose[("PUT", "/turnlog-chunks-000001")] = lambda: recording_server.create_index(
        "turnlog-chunks-000001", aliases=(DEFAULT_ALIAS,)
    )
    index = ElasticsearchIndex(hosts=recording_server.url)
    await index.start()
    await index.close()
    assert recording_server.aliased(DEFAULT_ALIAS) == ["turnlog-chunks-000001"]


async def test_a_first_index_without_its_alias_is_refused(recording_server) -> None:
    recording_server.create_index("turnlog-chunks-000001")
    index = ElasticsearchIndex(hosts=recording_server.url)
    with pytest.raises(RuntimeError, match="exists without the alias"):
        await index.start()
    await index.close()


async def test_writes_go_through_the_alias_and_wait_for_a_refresh(elasticsearch_index: ElasticsearchIndex, recording_server) -> None:
    await elasticsearch_index.upsert([chunk("c1", seed=1), chunk("c2", acl="owner", seed=2)])
    (bulk,) = recording_server.calls("PUT", "/_bulk") or recording_server.calls("POST", "/_bulk")
    assert bulk.params == {"refresh": "wait_for", "require_alias": "true"}
    assert bulk.body[0] == {"index": {"_index": DEFAULT_ALIAS, "_id": "c1"}}
    assert bulk.body[3]["acl"] == "owner" and bulk.body[3]["owner_id"] == "alice"
    assert np.allclose(bulk.body[1]["vector"], unit(1))


async def test_a_rejected_bulk_item_raises(elasticsearch_index: ElasticsearchIndex, recording_server) -> None:
    recording_server.indices["turnlog-chunks-000001"].aliases.clear()  # the alias vanished
    with pytest.raises(RuntimeError, match="not indexed"):
        await elasticsearch_index.upsert([chunk("c1")])
    assert recording_server.indices["turnlog-chunks-000001"].documents == {}


async def test_hybrid_search_sends_the_body_and_reads_hits(elasticsearch_index: ElasticsearchIndex, recording_server) -> None:
    await elasticsearch_index.upsert([chunk("c1", seed=1), chunk("c2", seed=2)])
    scope = SearchScope(org_id="org-a", workspace_id="ws-1", user_id="alice", file_ids=("file-1",))
    hits = await elasticsearch_index.search(scope, text="handbook", vector=unit(1), limit=5)
    assert [hit.chunk_id for hit in hits] == ["c1", "c2"]  # the recording server's order, not a ranking
    assert hits[0].title == "Handbook" and hits[0].location == "page 2" and hits[0].ordinal == 3
    assert hits[0].text == "text of c1" and hits[0].org_id == "org-a" and hits[0].file_id == "file-1"
    if recording_server.calls("POST", "/_msearch"):  # fusion="client": both lists in one _msearch, fused here
        (msearch,) = recording_server.calls("POST", "/turnlog-chunks/_msearch")
        assert msearch.body[1] == search_body(scope, text="handbook", vector=unit(1), size=50, list_name="bm25")
        assert msearch.body[3] == search_body(scope, text="handbook", vector=unit(1), size=50, list_name="vector")
        assert (hits[0].bm25_rank, hits[0].vector_rank) == (1, 1) and hits[0].score == pytest.approx((DEFAULT_BM25_WEIGHT + 1) / 61)
    else:  # the rrf retriever: one _search; Elasticsearch does not report per-list ranks
        (search,) = recording_server.calls("POST", "/turnlog-chunks/_search")
        assert search.body == hybrid_search_body(scope, text="handbook", vector=unit(1), limit=5)
        assert (hits[0].bm25_rank, hits[0].vector_rank) == (None, None) and hits[0].score == 1.0
        # no per-list score either: the similarity is the cosine of the returned vector to the query's
        assert hits[0].similarity == pytest.approx(1.0, abs=1e-5)
        assert hits[1].similarity == pytest.approx(float(unit(2) @ unit(1)), abs=1e-5)


async def test_single_list_searches_report_their_rank(elasticsearch_index: ElasticsearchIndex, recording_server) -> None:
    await elasticsearch_index.upsert([chunk("c1", seed=1)])
    (hit,) = await elasticsearch_index.search(SCOPE, text="x", vector=None, mode="bm25")
    assert (hit.bm25_rank, hit.vector_rank, hit.score) == (1, None, pytest.approx(1 / 61))
    (hit,) = await elasticsearch_index.search(SCOPE, text="x", vector=unit(1), mode="vector")
    assert (hit.bm25_rank, hit.vector_rank) == (None, 1)
    bm25_call, vector_call = recording_server.calls("POST", "/turnlog-chunks/_search")
    assert bm25_call.body == search_body(SCOPE, text="x", vector=None, size=10, list_name="bm25")
    assert vector_call.body == search_body(SCOPE, text="x", vector=unit(1), size=10, list_name="vector")


async def test_delete_file_and_count_filter_by_org_workspace_and_file(elasticsearch_index: ElasticsearchIndex, recording_server) -> None:
    await elasticsearch_index.upsert([chunk("c1"), chunk("c2"), chunk("c3", file_id="file-2")])
    assert await elasticsearch_index.delete_file(org_id="org-a", workspace_id="ws-1", file_id="file-1") == 2
    (delete,) = recording_server.calls("POST", "/turnlog-chunks/_delete_by_query")
    assert delete.body == {"query": {"bool": {"filter": [
        {"term": {"org_id": "org-a"}}, {"term": {"workspace_id": "ws-1"}}, {"term": {"file_id": "file-1"}}]}}}
    assert delete.params == {"refresh": "true", "conflicts": "proceed"}
    assert await elasticsearch_index.count(org_id="org-a", workspace_id="ws-1") == 1


async def test_blue_green_fills_a_new_index_then_moves_the_alias_and_drops_the_old(
    elasticsearch_index: ElasticsearchIndex, recording_server
) -> None:
    await elasticsearch_index.upsert([chunk("old")])
    generation = await elasticsearch_index.fresh_generation()
    assert generation.target == "turnlog-chunks-000002"
    (create,) = recording_server.calls("PUT", "/turnlog-chunks-000002")
    assert create.body["settings"]["index"]["refresh_interval"] == "-1" and "aliases" not in create.body
    await generation.upsert([chunk("new-1"), chunk("new-2")])
    generation_bulk = recording_server.calls(path_suffix="/_bulk")[-1]
    assert generation_bulk.params == {"refresh": "false", "require_alias": "false"}
    assert generation_bulk.body[0] == {"index": {"_index": "turnlog-chunks-000002", "_id": "new-1"}}
    assert await elasticsearch_index.count(org_id="org-a", workspace_id="ws-1") == 1  # readers still see the old

    before = len(recording_server.requests)
    await elasticsearch_index.switch_to(generation)
    switch = [(request.method, request.path) for request in recording_server.requests[before:]]
    assert switch == [
        ("PUT", "/turnlog-chunks-000002/_settings"),
        ("POST", "/turnlog-chunks-000002/_refresh"),
        ("GET", "/_alias/turnlog-chunks"),
        ("POST", "/_aliases"),
        ("DELETE", "/turnlog-chunks-000001"),
    ]
    (aliases,) = recording_server.calls("POST", "/_aliases")
    assert aliases.body == {"actions": alias_swap_actions(
        alias=DEFAULT_ALIAS, old_index="turnlog-chunks-000001", new_index="turnlog-chunks-000002")}
    assert recording_server.calls("PUT", "/turnlog-chunks-000002/_settings")[0].body == {"index": {"refresh_interval": None}}
    assert recording_server.aliased(DEFAULT_ALIAS) == ["turnlog-chunks-000002"]
    assert await elasticsearch_index.count(org_id="org-a", workspace_id="ws-1") == 2


async def test_a_discarded_generation_is_deleted_and_a_left_over_one_is_skipped(
    elasticsearch_index: ElasticsearchIndex, recording_server
) -> None:
    abandoned = await elasticsearch_index.fresh_generation()
    await elasticsearch_index.discard_generation(abandoned)
    assert "turnlog-chunks-000002" not in recording_server.indices
    left_over = await elasticsearch_index.fresh_generation()  # as if a crashed rebuild had left it
    assert left_over.target == "turnlog-chunks-000002"
    assert (await elasticsearch_index.fresh_generation()).target == "turnlog-chunks-000003"
    with pytest.raises(RuntimeError):
        await left_over.fresh_generation()


async def test_a_switch_fails_whole_if_another_switch_moved_the_alias_meanwhile(
    elasticsearch_index: ElasticsearchIndex, recording_server
) -> None:
    mine, theirs = await elasticsearch_index.fresh_generation(), await elasticsearch_index.fresh_generation()

    def their_switch() -> None:
        recording_server.indices["turnlog-chunks-000001"].aliases.clear()
        recording_server.indices[theirs.target].aliases.add(DEFAULT_ALIAS)

    recording_server.interpose[("POST", "/_aliases")] = their_switch
    with pytest.raises(NotFoundError):
        await elasticsearch_index.switch_to(mine)
    assert recording_server.aliased(DEFAULT_ALIAS) == [theirs.target]  # not both, not mine
    assert "turnlog-chunks-000001" in recording_server.indices  # nothing deleted after the failed move


def test_equal_scores_are_ordered_by_the_chunk_not_by_shard_order() -> None:
    from projections.search.elasticsearch import _similarity, _stably_ranked

    def raw(chunk_id: str, score: float, *, title: str = "Guide", ordinal: int = 0) -> dict:
        file_id = chunk_id.split(":")[0]
        return {"_id": chunk_id, "_score": score,
                "_source": {"chunk_id": chunk_id, "file_id": file_id, "title": title, "ordinal": ordinal}}

    arrived = [raw("f2:0", 0.9), raw("f1:0", 0.9), raw("f3:0", 0.95), raw("f0:0", 0.9, title="Appendix")]
    for order in (arrived, list(reversed(arrived))):
        assert [hit["_id"] for hit in _stably_ranked(order)] == ["f3:0", "f0:0", "f1:0", "f2:0"]
    assert _similarity(raw("f1:0", 0.75)) == pytest.approx(0.5)  # cosine fields score (1 + cos) / 2


def test_a_hit_without_its_vector_has_no_similarity_and_one_with_it_has_its_cosine() -> None:
    from projections.search.elasticsearch import _cosine_to

    source = {"chunk_id": "f1:0", "file_id": "f1", "title": "Guide", "ordinal": 0}
    assert _cosine_to({"_source": source}, unit(1)) is None  # an engine that keeps vectors out of _source: unjudged
    assert _cosine_to({"_source": source | {"vector": (2 * unit(3)).tolist()}}, unit(3)) == pytest.approx(1.0, abs=1e-5)
    assert _cosine_to({"_source": source | {"vector": [0.0] * 384}}, unit(3)) is None


async def test_an_unreachable_elasticsearch_is_unavailable_for_searches_and_writes(recording_server) -> None:
    """Reads answer 503 with Retry-After and an ingester retries its batch (kernel.errors.Unavailable), rather
    than a 500 and a dead letter."""
    index = ElasticsearchIndex(hosts=recording_server.url, replicas=0)
    await index.start()
    try:
        await recording_server.stop()
        scope = SearchScope(org_id="org", workspace_id="ws", user_id="u")
        for attempt in (
            index.search(scope, text="tides", vector=unit(1)),
            index.count(org_id="org", workspace_id="ws"),
            index.upsert([chunk("c1")]),
            index.delete_file(org_id="org", workspace_id="ws", file_id="file-1"),
        ):
            with pytest.raises(IndexUnavailable) as refused:
                await attempt
            assert isinstance(refused.value, Unavailable) and refused.value.retry_after_s == 5
            assert "could not be reached" in refused.value.detail
    finally:
        await index.close()
