"""The search index on Elasticsearch: BM25 + dense_vector kNN in one shared index, fused with RRF.

Naming. All tenants share one physical index per generation, `turnlog-chunks-000001`, ...,
behind the alias `turnlog-chunks` that every read and live write goes through. Not an index
per tenant: each index costs shards (heap, file handles, cluster-state updates), and thousands of
orgs would mean thousands of mostly tiny shards; one shared index scales by its shard count.
Isolation does not come from the index name but from the scope filter, which sits inside the
BM25 query's `bool.filter` and inside the kNN clause's `filter`, so ranking only ever sees
chunks the searcher may read (kNN pre-filters: the filter is applied during the vector search,
not to its top k). Routing by org id (all of an org's chunks on one shard) is a possible later
step for large clusters; it is not done here, as one huge org would make one hot shard.

Fusion. `fusion="rrf_retriever"` (the default) sends one search with Elasticsearch's `rrf`
retriever over a standard (BM25) retriever and a kNN retriever (Elasticsearch 8.14+; the `rrf`
retriever needs an Enterprise or trial licence). It does not report per-list ranks, so hits have
`bm25_rank` and `vector_rank` None, nor a kNN score; their vectors come back with them (384 floats a
hit, about 4 kB of JSON) and their cosine similarity to the query is computed here, so the relevance
gate can judge them (an engine that leaves vectors out of `_source` leaves it None: unjudged).
`fusion="client"` sends both searches in one `_msearch` and fuses them here with
`projections.search.fusion` (any licence; ranks reported; BM25-only hits carry no similarity).

Blue/green. `fresh_generation()` creates the next index (refresh off while it is filled);
`switch_to()` restores its refresh interval, refreshes it, moves the alias in one `_aliases`
call (remove old + add new: readers see one or the other), then deletes the old index.

What is tested where: the request bodies are pure functions below, unit-tested; the adapter's
HTTP wiring (paths, methods, bodies, the alias swap) runs against a recording HTTP server in the
tests. No Elasticsearch server runs in these tests, so Elasticsearch's ranking and filtering are
not executed by them; the embedded adapter runs the contract suite's ranking and isolation cases.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from elasticsearch import ApiError, AsyncElasticsearch, BadRequestError, ConnectionTimeout
from elasticsearch import ConnectionError as TransportConnectionError

from projections.search.fusion import DEFAULT_BM25_WEIGHT, DEFAULT_RANK_CONSTANT, reciprocal_rank_fusion, single_list_score
from projections.search.queries import keyword_words
from projections.search.index import IndexedChunk, IndexUnavailable, SearchHit, SearchMode, SearchScope
from projections.search.ordering import stable_ranking, tie_break_key

__all__ = [
    "DEFAULT_ALIAS",
    "ElasticsearchIndex",
    "Fusion",
    "bm25_query",
    "chunk_document",
    "hybrid_search_body",
    "index_body",
    "knn_clause",
    "scope_filter",
    "search_body",
]

DEFAULT_ALIAS = "turnlog-chunks"
RANK_WINDOW = 50  # as the embedded index: each list contributes max(limit, RANK_WINDOW) chunks
MAX_LIMIT = 1000
BULK_BATCH = 500
Fusion = Literal["rrf_retriever", "client"]

_CHUNK_FIELDS = ("chunk_id", "file_id", "org_id", "workspace_id", "owner_id", "acl", "title", "location", "ordinal", "text")
_SOURCE = {"excludes": ["vector"]}  # hits carry the 384 floats back only where no score gives the similarity
_SOURCE_WITH_VECTOR = {"includes": [*_CHUNK_FIELDS, "vector"]}
# Title repeats on every chunk of a file, so it counts half (the embedded index does the same).
_TEXT_FIELDS = ["title^0.5", "location", "text"]


# -- request bodies (pure) ---------------------------------------------------------------------


def index_body(*, dimensions: int, shards: int, replicas: int, refresh_interval: str | None = None) -> dict[str, Any]:
    """Settings and mappings of one generation's index (`dynamic: strict`: no field appears by accident)."""
    settings: dict[str, Any] = {"number_of_shards": shards, "number_of_replicas": replicas}
    if refresh_interval is not None:
        settings["refresh_interval"] = refresh_interval
    keyword = {"type": "keyword"}
    english = {"type": "text", "analyzer": "english"}
    return {
        "settings": {"index": settings},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "chunk_id": keyword,
                "file_id": keyword,
                "org_id": keyword,
                "workspace_id": keyword,
                "owner_id": keyword,
                "acl": keyword,
                "title": english,
                "location": english,
                "ordinal": {"type": "integer"},
                "text": english,
                "vector": {"type": "dense_vector", "dims": dimensions, "index": True, "similarity": "cosine"},
            },
        },
    }


def chunk_document(chunk: IndexedChunk) -> dict[str, Any]:
    """The `_source` of one chunk (its `_id` is the chunk id)."""
    document: dict[str, Any] = {name: getattr(chunk, name) for name in _CHUNK_FIELDS}
    document["vector"] = np.asarray(chunk.vector, dtype=np.float32).tolist()
    return document


def scope_filter(scope: SearchScope) -> list[dict[str, Any]]:
    """The filter clauses every search carries: this org, this workspace, visible to this user, these files."""
    clauses: list[dict[str, Any]] = [
        {"term": {"org_id": scope.org_id}},
        {"term": {"workspace_id": scope.workspace_id}},
        {"bool": {"should": [{"term": {"acl": "workspace"}}, {"term": {"owner_id": scope.user_id}}], "minimum_should_match": 1}},
    ]
    if scope.file_ids is not None:
        clauses.append({"terms": {"file_id": list(scope.file_ids)}})
    return clauses


def bm25_query(scope: SearchScope, text: str) -> dict[str, Any]:
    """BM25 over title, location and text, inside the scope filter.

    `multi_match` analyses the text as plain words: no query syntax reaches the parser (unlike
    `query_string`), so quotes, `*`, `-`, `AND`, `NEAR` or parentheses are only text.
    """
    query = " ".join(keyword_words(text))  # the english analyzer drops its stop words; question words go here
    return {
        "bool": {
            "must": [{"multi_match": {"query": query, "fields": _TEXT_FIELDS, "type": "best_fields", "operator": "or"}}],
            "filter": scope_filter(scope),
        }
    }


def knn_clause(scope: SearchScope, vector: np.ndarray, *, k: int) -> dict[str, Any]:
    """Approximate kNN (HNSW) on the chunk vectors, with the scope filter applied during the search."""
    return {
        "field": "vector",
        "query_vector": np.asarray(vector, dtype=np.float32).tolist(),
        "k": k,
        "num_candidates": min(10_000, max(100, 2 * k)),
        "filter": {"bool": {"filter": scope_filter(scope)}},
    }


def hybrid_search_body(scope: SearchScope, *, text: str, vector: np.ndarray, limit: int) -> dict[str, Any]:
    """One search: the `rrf` retriever over BM25 and kNN, each inside the scope filter."""
    window = max(limit, RANK_WINDOW)
    return {
        "retriever": {
            "rrf": {
                "retrievers": [
                    {"standard": {"query": bm25_query(scope, text)}},
                    {"knn": knn_clause(scope, vector, k=window)},
                ],
                "rank_constant": DEFAULT_RANK_CONSTANT,
                "rank_window_size": window,
            }
        },
        "size": limit,
        "_source": _SOURCE_WITH_VECTOR,  # the rrf score says nothing of similarity: it is computed from the vectors
        "track_total_hits": False,
    }


def search_body(scope: SearchScope, *, text: str, vector: np.ndarray | None, size: int, list_name: Literal["bm25", "vector"]) -> dict[str, Any]:
    """One ranked list on its own: BM25 (`query`) or kNN (`knn`)."""
    body: dict[str, Any] = {"size": size, "_source": _SOURCE, "track_total_hits": False}
    if list_name == "bm25":
        body["query"] = bm25_query(scope, text)
    else:
        assert vector is not None
        body["knn"] = knn_clause(scope, vector, k=size)
    return body


def file_query(*, org_id: str, workspace_id: str, file_id: str | None) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = [{"term": {"org_id": org_id}}, {"term": {"workspace_id": workspace_id}}]
    if file_id is not None:
        clauses.append({"term": {"file_id": file_id}})
    return {"bool": {"filter": clauses}}


def alias_swap_actions(*, alias: str, old_index: str, new_index: str) -> list[dict[str, Any]]:
    """One atomic `_aliases` call; `must_exist` makes it fail if another switch moved the alias first."""
    return [
        {"remove": {"index": old_index, "alias": alias, "must_exist": True}},
        {"add": {"index": new_index, "alias": alias}},
    ]


# -- the adapter -------------------------------------------------------------------------------


_OVERLOADED = frozenset({429, 502, 503, 504})  # statuses a retry later can cure


def _unavailable_when_unreachable(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Connection failures and overload answers become IndexUnavailable (503 + Retry-After, retried by processors)."""

    @functools.wraps(method)
    async def call(self: ElasticsearchIndex, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except (TransportConnectionError, ConnectionTimeout) as error:
            raise IndexUnavailable(f"the search index (Elasticsearch) could not be reached: {error}") from error
        except ApiError as error:
            if error.meta.status in _OVERLOADED:
                raise IndexUnavailable(f"the search index (Elasticsearch) answered {error.meta.status}: {error}") from error
            raise

    return call


class ElasticsearchIndex:
    """The `SearchIndex` port on Elasticsearch 8.14+ (see the module docstring)."""

    def __init__(
        self,
        *,
        hosts: str | Sequence[str],
        alias: str = DEFAULT_ALIAS,
        dimensions: int = 384,
        shards: int = 1,
        replicas: int = 1,
        fusion: Fusion = "rrf_retriever",
        bm25_weight: float = DEFAULT_BM25_WEIGHT,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`bm25_weight` applies to `fusion="client"`; the `rrf` retriever weighs both lists equally."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", alias):
            raise ValueError(f"not a usable Elasticsearch alias: {alias!r}")
        if fusion not in ("rrf_retriever", "client"):
            raise ValueError(f"unknown fusion {fusion!r}")
        self._hosts = hosts
        self._alias = alias
        self._dimensions = dimensions
        self._shards = shards
        self._replicas = replicas
        self._fusion = fusion
        self._bm25_weight = bm25_weight
        self._client_options = dict(client_options or {})
        self._client: AsyncElasticsearch | None = None
        self._owns_client = True
        # Live: reads and writes go through the alias. A generation: its own index, refresh off.
        self._target = alias
        self._is_generation = False

    @property
    def target(self) -> str:
        """The alias (the live index) or, for a generation being filled, its index name."""
        return self._target

    async def start(self) -> None:
        if self._client is None:
            self._client = AsyncElasticsearch(self._hosts, **self._client_options)
        if self._is_generation:
            return
        if not await self._client.indices.exists_alias(name=self._alias):
            first = self._index_name(1)
            try:
                await self._client.indices.create(
                    index=first,
                    aliases={self._alias: {}},
                    **index_body(dimensions=self._dimensions, shards=self._shards, replicas=self._replicas),
                )
            except BadRequestError as error:
                # Another process started first: the same first index, alias included, is fine.
                if _error_type(error) != "resource_already_exists_exception":
                    raise
                if not await self._client.indices.exists_alias(name=self._alias):
                    raise RuntimeError(f"index {first} exists without the alias {self._alias}") from error

    async def close(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.close()
        self._client = None

    # -- writes ------------------------------------------------------------------------------

    @_unavailable_when_unreachable
    async def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        client = self._started()
        for start in range(0, len(chunks), BULK_BATCH):
            operations: list[dict[str, Any]] = []
            for chunk in chunks[start : start + BULK_BATCH]:
                if np.asarray(chunk.vector).shape != (self._dimensions,):
                    raise ValueError(f"chunk {chunk.chunk_id}: expected a vector of shape ({self._dimensions},)")
                operations.append({"index": {"_index": self._target, "_id": chunk.chunk_id}})
                operations.append(chunk_document(chunk))
            response = await client.bulk(
                operations=operations,
                # Live writes wait for the next refresh, so a search right after an upload sees the
                # file; a generation is refreshed once, when it is switched to.
                refresh=False if self._is_generation else "wait_for",
                # Never let a write to a missing alias auto-create an index of that name.
                require_alias=not self._is_generation,
            )
            if response.get("errors"):
                failed = [item["index"] for item in response["items"] if "error" in item.get("index", {})]
                raise RuntimeError(f"{len(failed)} chunks were not indexed; first: {failed[0].get('error')}")

    @_unavailable_when_unreachable
    async def delete_file(self, *, org_id: str, workspace_id: str, file_id: str) -> int:
        response = await self._started().delete_by_query(
            index=self._target,
            query=file_query(org_id=org_id, workspace_id=workspace_id, file_id=file_id),
            refresh=not self._is_generation,
            conflicts="proceed",
        )
        return int(response["deleted"])

    # -- reads -------------------------------------------------------------------------------

    @_unavailable_when_unreachable
    async def count(self, *, org_id: str, workspace_id: str, file_id: str | None = None) -> int:
        response = await self._started().count(
            index=self._target, query=file_query(org_id=org_id, workspace_id=workspace_id, file_id=file_id)
        )
        return int(response["count"])

    @_unavailable_when_unreachable
    async def has_chunks(self, *, org_id: str, workspace_id: str) -> bool:
        response = await self._started().count(
            index=self._target, query=file_query(org_id=org_id, workspace_id=workspace_id, file_id=None), terminate_after=1
        )
        return int(response["count"]) > 0

    @_unavailable_when_unreachable
    async def search(
        self,
        scope: SearchScope,
        *,
        text: str,
        vector: np.ndarray | None,
        limit: int = 10,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]:
        client = self._started()
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        if mode not in ("hybrid", "bm25", "vector"):
            raise ValueError(f"unknown search mode {mode!r}")
        if scope.file_ids is not None and not scope.file_ids:
            return []
        if mode != "bm25" and (vector is None or np.asarray(vector).shape != (self._dimensions,)):
            raise ValueError(f"a {mode} search needs the query's vector, of shape ({self._dimensions},)")
        if mode == "hybrid" and self._fusion == "rrf_retriever":
            assert vector is not None
            response = await client.search(index=self._target, **hybrid_search_body(scope, text=text, vector=vector, limit=limit))
            return [
                _hit(raw, score=float(raw["_score"]), bm25_rank=None, vector_rank=None, similarity=_cosine_to(raw, vector))
                for raw in _stably_ranked(response["hits"]["hits"])
            ]
        if mode != "hybrid":
            body = search_body(scope, text=text, vector=vector, size=limit, list_name=mode)
            response = await client.search(index=self._target, **body)
            return [
                _hit(raw, score=single_list_score(rank), similarity=_similarity(raw) if mode == "vector" else None, **{f"{mode}_rank": rank})
                for rank, raw in enumerate(_stably_ranked(response["hits"]["hits"]), start=1)
            ]
        window = max(limit, RANK_WINDOW)
        searches: list[dict[str, Any]] = []
        for list_name in ("bm25", "vector"):
            searches += [{}, search_body(scope, text=text, vector=vector, size=window, list_name=list_name)]
        response = await client.msearch(index=self._target, searches=searches)
        lists = []
        for answer in response["responses"]:
            if "error" in answer:
                raise RuntimeError(f"Elasticsearch search failed: {answer['error']}")
            lists.append({raw["_id"]: raw for raw in _stably_ranked(answer["hits"]["hits"])})

        def tie_break(chunk_id: str) -> tuple:
            return _tie_break(lists[0].get(chunk_id) or lists[1][chunk_id])

        fused = reciprocal_rank_fusion([list(found) for found in lists], weights=(self._bm25_weight, 1.0), tie_break=tie_break)[:limit]
        return [
            _hit(
                lists[0].get(item.key) or lists[1][item.key], score=item.score, bm25_rank=item.ranks[0], vector_rank=item.ranks[1],
                similarity=_similarity(lists[1][item.key]) if item.key in lists[1] else None,
            )
            for item in fused
        ]

    # -- blue/green --------------------------------------------------------------------------

    async def fresh_generation(self) -> ElasticsearchIndex:
        client = self._started()
        if self._is_generation:
            raise RuntimeError("a generation being rebuilt cannot start another")
        existing = await client.indices.get_alias(index=f"{self._alias}-*")
        numbers = [number for name in existing if (number := self._generation_number(name)) is not None]
        name = self._index_name(max(numbers, default=0) + 1)
        # Refresh off while it is filled: one refresh at the switch instead of one a second.
        await client.indices.create(
            index=name, **index_body(dimensions=self._dimensions, shards=self._shards, replicas=self._replicas, refresh_interval="-1")
        )
        generation = ElasticsearchIndex(
            hosts=self._hosts,
            alias=self._alias,
            dimensions=self._dimensions,
            shards=self._shards,
            replicas=self._replicas,
            fusion=self._fusion,
        )
        generation._client, generation._owns_client = client, False
        generation._target, generation._is_generation = name, True
        return generation

    async def switch_to(self, generation: ElasticsearchIndex) -> None:
        client = self._started()
        new_index = self._generation_of(generation)
        await client.indices.put_settings(index=new_index, settings={"index": {"refresh_interval": None}})  # back to the default
        await client.indices.refresh(index=new_index)
        old_index = await self._current_index()
        await client.indices.update_aliases(actions=alias_swap_actions(alias=self._alias, old_index=old_index, new_index=new_index))
        await generation.close()
        await client.indices.delete(index=old_index)

    async def discard_generation(self, generation: ElasticsearchIndex) -> None:
        client = self._started()
        name = self._generation_of(generation)
        await generation.close()
        await client.indices.delete(index=name)

    async def _current_index(self) -> str:
        indices = list(await self._started().indices.get_alias(name=self._alias))
        if len(indices) != 1:
            raise RuntimeError(f"alias {self._alias} points at {indices}, expected exactly one index")
        return indices[0]

    def _generation_of(self, generation: ElasticsearchIndex) -> str:
        if self._is_generation:
            raise RuntimeError("switch and discard through the live index, not a generation")
        if not generation._is_generation or generation._alias != self._alias:
            raise ValueError("not a generation of this index (use fresh_generation)")
        return generation._target

    def _index_name(self, number: int) -> str:
        return f"{self._alias}-{number:06d}"

    def _generation_number(self, name: str) -> int | None:
        match = re.fullmatch(re.escape(self._alias) + r"-(\d{6,})", name)
        return int(match.group(1)) if match else None

    def _started(self) -> AsyncElasticsearch:
        if self._client is None:
            raise RuntimeError("the search index is not started")
        return self._client


def _hit(
    raw: Mapping[str, Any], *, score: float, bm25_rank: int | None = None, vector_rank: int | None = None, similarity: float | None = None
) -> SearchHit:
    source = raw["_source"]
    fields = {name: source[name] for name in _CHUNK_FIELDS if name != "location"}
    return SearchHit(
        **fields, location=source.get("location", ""), score=score, bm25_rank=bm25_rank, vector_rank=vector_rank, similarity=similarity
    )


def _tie_break(raw: Mapping[str, Any]) -> tuple:
    source = raw["_source"]
    return tie_break_key(title=source["title"], ordinal=source["ordinal"], file_id=source["file_id"], chunk_id=source["chunk_id"])


def _stably_ranked(hits: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Hits by score, ties by what the chunk is (shards and segments return equal scores in any order)."""
    return stable_ranking(hits, score=lambda raw: float(raw.get("_score") or 0.0), key=_tie_break)


def _similarity(raw: Mapping[str, Any]) -> float | None:
    """The cosine similarity of a kNN hit: Elasticsearch scores `cosine` fields as (1 + cosine) / 2."""
    score = raw.get("_score")
    return None if score is None else 2.0 * float(score) - 1.0


def _cosine_to(raw: Mapping[str, Any], query: np.ndarray) -> float | None:
    """The cosine similarity of a hit's returned vector to the query's; None when the hit came back without one."""
    stored = raw["_source"].get("vector")
    if stored is None:
        return None
    chunk_vector = np.asarray(stored, dtype=np.float32)
    query_vector = np.asarray(query, dtype=np.float32)
    norms = float(np.linalg.norm(chunk_vector) * np.linalg.norm(query_vector))
    if chunk_vector.shape != query_vector.shape or norms == 0.0:
        return None
    return float(chunk_vector @ query_vector) / norms


def _error_type(error: BadRequestError) -> str | None:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("type")
    return None

