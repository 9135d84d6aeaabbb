"""The embedded index's vectors: each workspace's matrix, cached in memory and kept current, searched by exact cosine."""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from projections.search.index import SearchScope
from projections.search.ordering import SCORE_DIGITS

__all__ = ["PARALLEL_RANK_ROWS", "WorkspaceVectorCache", "WorkspaceVectors", "rank_beside", "unit_vector"]


def unit_vector(vector: np.ndarray, dimensions: int, *, what: str) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dimensions,):
        raise ValueError(f"{what}: expected a vector of shape ({dimensions},), got {array.shape}")
    norm = float(np.linalg.norm(array))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"{what}: the vector must be finite and non-zero")
    # Normalised here as well: exact cosine is then a dot product, whatever the caller sent.
    return array / np.float32(norm)


@dataclass(frozen=True, kw_only=True)
class WorkspaceVectors:
    """One workspace's vectors as a matrix, with the columns the scope filter needs, as of `version`.

    Rows [0, size) of the buffers are this version's; a later version may append rows past
    `size` into the same buffers (never touching these), so catching up after a write copies
    nothing. Deleted rows stay in place, masked out by `live`, until they are a quarter of all.
    """

    version: int
    size: int
    row_ids: np.ndarray  # int64 (capacity,), ascending in [0, size)
    matrix: np.ndarray  # float32 (capacity, d), rows L2-normalised
    shared: np.ndarray  # bool (capacity,): acl == "workspace"
    owner_codes: np.ndarray  # int32 (capacity,), codes of owner_ids
    file_codes: np.ndarray  # int32 (capacity,), codes of file_ids
    live: np.ndarray  # bool (size,): False once the chunk is deleted
    owner_code_by_id: dict[str, int]
    file_code_by_id: dict[str, int]

    @classmethod
    def empty(cls, dimensions: int) -> WorkspaceVectors:
        return cls._allocate(version=0, capacity=0, dimensions=dimensions, owner_code_by_id={}, file_code_by_id={})

    @classmethod
    def _allocate(
        cls, *, version: int, capacity: int, dimensions: int, owner_code_by_id: dict[str, int], file_code_by_id: dict[str, int]
    ) -> WorkspaceVectors:
        return cls(
            version=version,
            size=0,
            row_ids=np.empty(capacity, np.int64),
            matrix=np.empty((capacity, dimensions), np.float32),
            shared=np.empty(capacity, bool),
            owner_codes=np.empty(capacity, np.int32),
            file_codes=np.empty(capacity, np.int32),
            live=np.empty(0, bool),
            owner_code_by_id=owner_code_by_id,
            file_code_by_id=file_code_by_id,
        )

    def catch_up(self, connection: sqlite3.Connection, *, org_id: str, workspace_id: str, version: int) -> WorkspaceVectors:
        """This workspace as of `version` (the connection's snapshot): rows added since, rows gone since."""
        highest = int(self.row_ids[self.size - 1]) if self.size else 0
        live = self.live
        (remaining,) = connection.execute(
            "SELECT count(*) FROM chunks WHERE org_id = ? AND workspace_id = ? AND row_id <= ?", (org_id, workspace_id, highest)
        ).fetchone()
        if remaining != int(np.count_nonzero(live)):
            remaining_ids = np.fromiter(
                itertools.chain.from_iterable(connection.execute(
                    "SELECT row_id FROM chunks WHERE org_id = ? AND workspace_id = ? AND row_id <= ?", (org_id, workspace_id, highest)
                )),
                np.int64,
            )
            live = live & np.isin(self.row_ids[: self.size], remaining_ids, assume_unique=True)
        added = connection.execute(
            "SELECT c.row_id, c.owner_id, c.acl, c.file_id, v.vector FROM chunks AS c JOIN chunk_vectors AS v ON v.row_id = c.row_id"
            " WHERE c.org_id = ? AND c.workspace_id = ? AND c.row_id > ? ORDER BY c.row_id",
            (org_id, workspace_id, highest),
        ).fetchall()
        base = self
        live_count = int(np.count_nonzero(live))
        if self.size + len(added) > len(self.row_ids) or live_count < 0.75 * self.size:
            base = self._compacted(live, live_count, extra=len(added))
            live = np.ones(base.size, bool)
        owner_code_by_id = dict(base.owner_code_by_id)
        file_code_by_id = dict(base.file_code_by_id)
        start, end = base.size, base.size + len(added)
        if added:
            base.row_ids[start:end] = [row[0] for row in added]
            base.matrix[start:end] = np.frombuffer(b"".join(row[4] for row in added), np.float32).reshape(len(added), -1)
            base.shared[start:end] = [row[2] == "workspace" for row in added]
            base.owner_codes[start:end] = [owner_code_by_id.setdefault(row[1], len(owner_code_by_id)) for row in added]
            base.file_codes[start:end] = [file_code_by_id.setdefault(row[3], len(file_code_by_id)) for row in added]
        return replace(
            base,
            version=version,
            size=end,
            live=np.concatenate([live, np.ones(len(added), bool)]),
            owner_code_by_id=owner_code_by_id,
            file_code_by_id=file_code_by_id,
        )

    def _compacted(self, live: np.ndarray, live_count: int, *, extra: int) -> WorkspaceVectors:
        """The live rows in new buffers with room for `extra` more (and a quarter to spare)."""
        needed = live_count + extra
        compact = self._allocate(
            version=self.version,
            capacity=needed + needed // 4 + 256,
            dimensions=self.matrix.shape[1],
            owner_code_by_id=self.owner_code_by_id,
            file_code_by_id=self.file_code_by_id,
        )
        kept = np.flatnonzero(live)
        for name in ("row_ids", "matrix", "shared", "owner_codes", "file_codes"):
            np.take(getattr(self, name), kept, axis=0, out=getattr(compact, name)[:live_count])
        return replace(compact, size=live_count)

    def rank(self, scope: SearchScope, query: np.ndarray, *, window: int) -> list[tuple[int, float]]:
        """(row id, cosine similarity) of the `window` visible chunks most similar to `query`, best first."""
        size = self.size
        visible = self.live & (self.shared[:size] | (self.owner_codes[:size] == self.owner_code_by_id.get(scope.user_id, -1)))
        if scope.file_ids is not None:
            wanted = [self.file_code_by_id[file_id] for file_id in scope.file_ids if file_id in self.file_code_by_id]
            visible &= np.isin(self.file_codes[:size], wanted)
        candidates = np.flatnonzero(visible)
        if candidates.size == 0:
            return []
        # Only candidates are ranked. For a small share, multiply just their rows; for most of
        # the matrix, one pass over all of it is cheaper than copying the rows out first (the
        # scores of the others are computed and dropped unread).
        if candidates.size * 4 < size:
            scores = self.matrix[candidates] @ query
        else:
            scores = (self.matrix[:size] @ query)[candidates]
        top = min(window, candidates.size)
        best = np.argpartition(-scores, top - 1)[:top]
        # Chunks tied with the last one kept come along too: which of equal vectors makes the cut
        # must not depend on where they sit in the matrix (the caller orders ties, `ordering.py`).
        boundary = scores[best].min() - np.float32(10.0 ** -SCORE_DIGITS)
        best = np.flatnonzero(scores >= boundary) if top < candidates.size else best
        best = best[np.argsort(-scores[best], kind="stable")]
        return list(zip(self.row_ids[candidates[best]].tolist(), scores[best].tolist()))

    def similarities(self, row_ids: list[int], query: np.ndarray) -> dict[int, float]:
        """Cosine similarity to `query` of those of `row_ids` this matrix holds (a BM25-only hit gets one too)."""
        held = self.row_ids[: self.size]
        positions = np.searchsorted(held, row_ids)
        found = [(row_id, position) for row_id, position in zip(row_ids, positions.tolist()) if position < self.size and held[position] == row_id]
        if not found:
            return {}
        scores = self.matrix[[position for _, position in found]] @ query
        return {row_id: float(score) for (row_id, _), score in zip(found, scores.tolist())}


# A workspace this large is ranked on a thread of its own while FTS5 scores the keyword list (numpy's
# product and SQLite's steps both let go of the GIL), so a hybrid search waits for the slower of the
# two lists, not their sum. Below it the hand-off costs more than the product: ranked in place.
PARALLEL_RANK_ROWS = 20_000
_RANKING_THREADS = os.cpu_count() or 2
_ranking_pool = ThreadPoolExecutor(max_workers=_RANKING_THREADS, thread_name_prefix="vector-rank")
_free_ranking_threads = threading.BoundedSemaphore(_RANKING_THREADS)


def rank_beside(
    vectors: WorkspaceVectors, scope: SearchScope, query: np.ndarray, *, window: int, alone: bool
) -> Future[list[tuple[int, float]]]:
    """`vectors.rank(...)`, on a ranking thread when it is worth one and one is free, else here and now.

    `alone`: the caller has nothing to do meanwhile (a vector-only search). A busy server ranks in
    place rather than queue behind other searches' products: the cores are taken either way.
    """
    if alone or vectors.size < PARALLEL_RANK_ROWS or not _free_ranking_threads.acquire(blocking=False):
        ranked: Future[list[tuple[int, float]]] = Future()
        ranked.set_result(vectors.rank(scope, query, window=window))
        return ranked
    try:
        ranking = _ranking_pool.submit(vectors.rank, scope, query, window=window)
    except BaseException:
        _free_ranking_threads.release()
        raise
    ranking.add_done_callback(lambda _: _free_ranking_threads.release())
    return ranking


class WorkspaceVectorCache:
    """One generation's workspace matrices, bounded by `max_cached_vectors` rows (least recently used go first).

    Vectors are read once per workspace into a matrix cached in memory; when the workspace's
    version (bumped in every write transaction) moves, the cache reads only what changed, so
    several processes may share the directory.
    """

    def __init__(self, *, dimensions: int, max_cached_vectors: int) -> None:
        self._dimensions = dimensions
        self._max_cached_vectors = max_cached_vectors
        self._cache_lock = threading.Lock()
        self._vectors: OrderedDict[tuple[str, str], WorkspaceVectors] = OrderedDict()
        self._loading: dict[tuple[str, str], threading.Lock] = {}

    def clear(self) -> None:
        self._vectors.clear()

    def workspace_vectors(self, connection: sqlite3.Connection, org_id: str, workspace_id: str) -> WorkspaceVectors | None:
        """The workspace's vectors as of the connection's snapshot (from the cache while still current)."""
        version_row = connection.execute(
            "SELECT version FROM workspace_versions WHERE org_id = ? AND workspace_id = ?", (org_id, workspace_id)
        ).fetchone()
        if version_row is None:
            return None
        version = version_row[0]
        key = (org_id, workspace_id)
        with self._cache_lock:
            cached = self._vectors.get(key)
            if cached is not None and cached.version == version:
                self._vectors.move_to_end(key)
                return cached
            # One reader reads a workspace at a time; readers of other workspaces do not wait.
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._cache_lock:
                cached = self._vectors.get(key)
            if cached is not None and cached.version == version:
                return cached
            # Row ids only grow, so a cache from an older version catches up incrementally; one
            # from a newer version (this reader's snapshot is older) cannot go back: read afresh.
            start = cached if cached is not None and cached.version < version else WorkspaceVectors.empty(self._dimensions)
            loaded = start.catch_up(connection, org_id=org_id, workspace_id=workspace_id, version=version)
            with self._cache_lock:
                if cached is None or cached.version < version:
                    self._vectors[key] = loaded
                    self._vectors.move_to_end(key)
                    self._evict()
            return loaded

    def _evict(self) -> None:
        held = sum(len(entry.row_ids) for entry in self._vectors.values())  # capacity: what memory holds
        while held > self._max_cached_vectors and len(self._vectors) > 1:
            _, evicted = self._vectors.popitem(last=False)
            held -= len(evicted.row_ids)
