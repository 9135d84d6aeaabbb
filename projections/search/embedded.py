"""The search index on one machine: SQLite FTS5 (BM25) + exact cosine over in-memory vectors, fused with RRF.

Layout of the index directory:

    CURRENT                   the name of the generation readers use (replaced with os.replace)
    chunks-000001.sqlite3     one SQLite database per generation (+ its -wal and -shm files)
    LOCK                      flock held while generations are created or switched

Each generation holds the chunks (text, metadata, the vector as a float32 BLOB) and an FTS5 index
over their title, location and text. The scope filter (org, workspace, ACL, files) runs inside
both ranked queries: in the FTS query's WHERE clause (and, for org and workspace, inside the MATCH
expression itself), and as the mask that picks the vector candidates before they are ranked.
Vectors are read once per workspace into a matrix cached in memory; when the workspace's version
(bumped in every write transaction) moves, the cache reads only what changed, so several processes
may share the directory. All SQLite and numpy work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import queue
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from projections.search.fusion import DEFAULT_BM25_WEIGHT, DEFAULT_RANK_CONSTANT, reciprocal_rank_fusion
from projections.search.queries import QUESTION_WORDS, keyword_words
from projections.search.index import IndexedChunk, SearchHit, SearchMode, SearchScope

__all__ = ["ENGLISH_STOP_WORDS", "EmbeddedSearchIndex", "RANK_WINDOW", "fts_match_expression", "scope_token"]

# Each list (BM25, vectors) contributes its best max(limit, RANK_WINDOW) chunks to the fusion.
RANK_WINDOW = 50
MAX_LIMIT = 1000
# Words of the query that reach FTS5; the rest of a pasted page adds cost, not recall.
MAX_QUERY_WORDS = 64

_GENERATION_FILE = re.compile(r"^chunks-(\d{6,})\.sqlite3$")
_ACCESS_COLUMNS = ("chunk_id", "file_id", "org_id", "workspace_id", "owner_id", "acl", "ordinal")
_TEXT_COLUMNS = ("title", "location", "text")
_CHUNK_COLUMNS = (*_ACCESS_COLUMNS, *_TEXT_COLUMNS)

# Three tables per chunk, joined by row_id: `chunks` stays narrow (ids and access columns) so the
# scope filter, run on every BM25 candidate, reads few pages; `chunk_texts` is the FTS5 index's
# content; `chunk_vectors` holds the embeddings. A chunk's rows are never updated in place: an
# upsert that changes a chunk deletes it and inserts it under a new row id, so the vector cache can
# catch up by reading only rows above the highest id it holds (and the ids that are gone).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    -- AUTOINCREMENT: row ids only grow and are never reused.
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id TEXT NOT NULL UNIQUE,
    file_id TEXT NOT NULL,
    org_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    acl TEXT NOT NULL CHECK (acl IN ('workspace', 'owner')),
    ordinal INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (org_id, workspace_id, file_id);
CREATE TABLE IF NOT EXISTS chunk_texts (
    row_id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    location TEXT NOT NULL,
    text TEXT NOT NULL,
    scope_token TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunk_vectors (row_id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    title, location, text, scope_token,
    content='chunk_texts', content_rowid='row_id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunk_texts_inserted AFTER INSERT ON chunk_texts BEGIN
    INSERT INTO chunks_fts (rowid, title, location, text, scope_token)
    VALUES (new.row_id, new.title, new.location, new.text, new.scope_token);
END;
CREATE TRIGGER IF NOT EXISTS chunk_texts_deleted AFTER DELETE ON chunk_texts BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, title, location, text, scope_token)
    VALUES ('delete', old.row_id, old.title, old.location, old.text, old.scope_token);
END;
CREATE TRIGGER IF NOT EXISTS chunks_deleted AFTER DELETE ON chunks BEGIN
    DELETE FROM chunk_texts WHERE row_id = old.row_id;
    DELETE FROM chunk_vectors WHERE row_id = old.row_id;
END;
-- Bumped in every transaction that changes a workspace's chunks: cached vectors check it.
CREATE TABLE IF NOT EXISTS workspace_versions (
    org_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (org_id, workspace_id)
) WITHOUT ROWID;
"""

# Column weights for bm25(): title, location, text, scope_token. The title repeats on every chunk
# of a file, so it counts half; the scope token only prunes and must not score.
_BM25 = "bm25(chunks_fts, 0.5, 1.0, 1.0, 0.0)"

# The scope filter, on `chunks` aliased `c`. Parameters: org, workspace, user, file ids (a JSON
# array, or NULL for the whole workspace).
_IN_SCOPE = """
    c.org_id = :org_id AND c.workspace_id = :workspace_id
    AND (c.acl = 'workspace' OR c.owner_id = :user_id)
    AND (:file_ids IS NULL OR c.file_id IN (SELECT value FROM json_each(:file_ids)))
"""

_BM25_QUERY = f"""
SELECT c.row_id
FROM chunks_fts JOIN chunks AS c ON c.row_id = chunks_fts.rowid
WHERE chunks_fts MATCH :match AND {_IN_SCOPE}
ORDER BY {_BM25}
LIMIT :window
"""

# The final read applies the scope again: the hits cannot leave it even if a ranking step erred.
_FETCH_QUERY = f"""
SELECT c.row_id, {", ".join(f"c.{column}" for column in _ACCESS_COLUMNS)}, {", ".join(f"t.{column}" for column in _TEXT_COLUMNS)}
FROM chunks AS c JOIN chunk_texts AS t ON t.row_id = c.row_id
WHERE c.row_id IN (SELECT value FROM json_each(:row_ids)) AND {_IN_SCOPE}
"""

_STORED_CHUNK = f"""
SELECT c.row_id, {", ".join(f"c.{column}" for column in _ACCESS_COLUMNS)}, {", ".join(f"t.{column}" for column in _TEXT_COLUMNS)}, v.vector
FROM chunks AS c JOIN chunk_texts AS t ON t.row_id = c.row_id JOIN chunk_vectors AS v ON v.row_id = c.row_id
WHERE c.chunk_id = ?
"""

_INSERT_CHUNK = f"INSERT INTO chunks ({', '.join(_ACCESS_COLUMNS)}) VALUES ({', '.join('?' for _ in _ACCESS_COLUMNS)})"

_BUMP_VERSION = """
INSERT INTO workspace_versions (org_id, workspace_id, version) VALUES (?, ?, 1)
ON CONFLICT (org_id, workspace_id) DO UPDATE SET version = version + 1
"""

# Elasticsearch's `_english_` stop words (Lucene's EnglishAnalyzer set), dropped from queries only:
# they match nearly every chunk, cost most of the BM25 time and add almost nothing to the ranking.
# A query made only of them is searched as it is.
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they"
    " this to was will with".split()
)
QUERY_STOP_WORDS = ENGLISH_STOP_WORDS | QUESTION_WORDS


def scope_token(org_id: str, workspace_id: str) -> str:
    """One FTS token naming a workspace, so MATCH itself walks only that workspace's postings.

    Hex between a letter and a digit: the unicode61 tokenizer keeps it whole, and no Porter rule
    (all suffix rules on letters) rewrites a token that ends in a digit.
    """
    digest = hashlib.blake2b(json.dumps([org_id, workspace_id]).encode(), digest_size=16).hexdigest()
    return f"w{digest}0"


def fts_match_expression(text: str, *, scope: str) -> str | None:
    """An FTS5 MATCH expression for plain user text: any of its words, within the scope token.

    User text is never FTS5 syntax: each word (letters and digits only) becomes a quoted string,
    so `NEAR`, `AND`, `*`, `-`, `^`, `:`, quotes and parentheses are words or nothing. Stop words
    are left out unless nothing else is left. None when the text has no words.
    """
    words = keyword_words(text, stop_words=QUERY_STOP_WORDS)[:MAX_QUERY_WORDS]
    if not words:
        return None
    any_word = " OR ".join('"' + word.replace('"', '""') + '"' for word in words)
    return f'scope_token : "{scope}" AND {{title location text}} : ({any_word})'


@dataclass(frozen=True, kw_only=True)
class _WorkspaceVectors:
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
    def empty(cls, dimensions: int) -> _WorkspaceVectors:
        return cls._allocate(version=0, capacity=0, dimensions=dimensions, owner_code_by_id={}, file_code_by_id={})

    @classmethod
    def _allocate(
        cls, *, version: int, capacity: int, dimensions: int, owner_code_by_id: dict[str, int], file_code_by_id: dict[str, int]
    ) -> _WorkspaceVectors:
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

    def catch_up(self, connection: sqlite3.Connection, *, org_id: str, workspace_id: str, version: int) -> _WorkspaceVectors:
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

    def _compacted(self, live: np.ndarray, live_count: int, *, extra: int) -> _WorkspaceVectors:
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
        best = best[np.argsort(-scores[best], kind="stable")]
        return list(zip(self.row_ids[candidates[best]].tolist(), scores[best].tolist()))


def _set_wal(connection: sqlite3.Connection, *, attempts: int = 100) -> None:
    """WAL mode, waiting out another process that opens the same new file at the same moment.

    Switching the journal mode takes an exclusive lock without going through the busy handler,
    so two processes starting together (an ingester and a prompt builder) can see "database is
    locked" at once instead of after `timeout`.
    """
    for attempt in range(attempts):
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


class _Generation:
    """One generation's SQLite file: a pool of connections and the workspace vector cache."""

    def __init__(self, *, path: Path, dimensions: int, max_cached_vectors: int) -> None:
        self.path = path
        self.dimensions = dimensions
        self._max_cached_vectors = max_cached_vectors
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._write_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._vectors: OrderedDict[tuple[str, str], _WorkspaceVectors] = OrderedDict()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._retired = False

    def open(self) -> None:
        with self.connection() as connection:
            connection.executescript(_SCHEMA)
            connection.execute("INSERT OR IGNORE INTO settings VALUES ('dimensions', ?)", (str(self.dimensions),))
            (stored,) = connection.execute("SELECT value FROM settings WHERE name = 'dimensions'").fetchone()
            if int(stored) != self.dimensions:
                raise ValueError(f"{self.path} holds {stored}-dimensional vectors, not {self.dimensions}")

    def retire(self) -> None:
        """Close idle connections now, and each busy one as it is returned."""
        self._retired = True
        self._vectors.clear()
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        try:
            connection = self._idle.get_nowait()
        except queue.Empty:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            _set_wal(connection)
            # FULL: callers commit their log position once a write returns; a write a power cut
            # took back would stay missing until the next rebuild.
            connection.execute("PRAGMA synchronous = FULL")
        try:
            yield connection
        finally:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if self._retired:
                connection.close()
            else:
                self._idle.put(connection)

    @contextlib.contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A connection inside a write transaction, committed when the block ends without error."""
        with self._write_lock, self.connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")

    # -- writes ------------------------------------------------------------------------------

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        rows = [self._row(chunk) for chunk in chunks]
        with self.writing() as connection:
            touched: set[tuple[str, str]] = set()
            for row in rows:
                stored = connection.execute(_STORED_CHUNK, (row["chunk_id"],)).fetchone()
                if stored is not None:
                    if stored[1:] == tuple(row[column] for column in (*_CHUNK_COLUMNS, "vector")):
                        continue  # a redelivery: nothing changes, caches stay valid
                    connection.execute("DELETE FROM chunks WHERE row_id = ?", (stored[0],))
                    touched.add((stored[3], stored[4]))  # a chunk that moves changes the workspace it leaves
                row_id = connection.execute(_INSERT_CHUNK, tuple(row[column] for column in _ACCESS_COLUMNS)).lastrowid
                connection.execute(
                    "INSERT INTO chunk_texts (row_id, title, location, text, scope_token) VALUES (?, ?, ?, ?, ?)",
                    (row_id, row["title"], row["location"], row["text"], scope_token(row["org_id"], row["workspace_id"])),
                )
                connection.execute("INSERT INTO chunk_vectors (row_id, vector) VALUES (?, ?)", (row_id, row["vector"]))
                touched.add((row["org_id"], row["workspace_id"]))
            connection.executemany(_BUMP_VERSION, sorted(touched))

    def _row(self, chunk: IndexedChunk) -> dict[str, Any]:
        if chunk.acl not in ("workspace", "owner"):
            raise ValueError(f"chunk {chunk.chunk_id}: unknown acl {chunk.acl!r}")
        row: dict[str, Any] = {column: getattr(chunk, column) for column in _CHUNK_COLUMNS}
        row["vector"] = _unit_vector(chunk.vector, self.dimensions, what=f"chunk {chunk.chunk_id}").tobytes()
        return row

    def delete_file(self, *, org_id: str, workspace_id: str, file_id: str) -> int:
        with self.writing() as connection:
            deleted = connection.execute(
                "DELETE FROM chunks WHERE org_id = ? AND workspace_id = ? AND file_id = ?", (org_id, workspace_id, file_id)
            ).rowcount
            if deleted:
                connection.execute(_BUMP_VERSION, (org_id, workspace_id))
        return deleted

    # -- reads -------------------------------------------------------------------------------

    def count(self, *, org_id: str, workspace_id: str, file_id: str | None) -> int:
        with self.connection() as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM chunks WHERE org_id = ? AND workspace_id = ? AND (? IS NULL OR file_id = ?)",
                (org_id, workspace_id, file_id, file_id),
            ).fetchone()
        return count

    def search(
        self, scope: SearchScope, *, text: str, vector: np.ndarray | None, limit: int, mode: SearchMode, bm25_weight: float
    ) -> list[SearchHit]:
        window = max(limit, RANK_WINDOW)
        parameters = {
            "org_id": scope.org_id,
            "workspace_id": scope.workspace_id,
            "user_id": scope.user_id,
            "file_ids": None if scope.file_ids is None else json.dumps(list(scope.file_ids)),
        }
        with self.connection() as connection:
            connection.execute("BEGIN")  # one snapshot for both lists and the final read
            rankings: list[list[int]] = []
            similarities: dict[int, float] = {}
            if mode in ("hybrid", "bm25"):
                match = fts_match_expression(text, scope=scope_token(scope.org_id, scope.workspace_id))
                bm25_ids = [] if match is None else [
                    row_id for (row_id,) in connection.execute(_BM25_QUERY, {**parameters, "match": match, "window": window})
                ]
                rankings.append(bm25_ids)
            if mode in ("hybrid", "vector"):
                assert vector is not None
                vectors = self._workspace_vectors(connection, scope.org_id, scope.workspace_id)
                ranked = vectors.rank(scope, vector, window=window) if vectors is not None else []
                similarities = dict(ranked)
                rankings.append([row_id for row_id, _ in ranked])
            weights = (bm25_weight, 1.0) if mode == "hybrid" else None
            fused = reciprocal_rank_fusion(rankings, rank_constant=DEFAULT_RANK_CONSTANT, weights=weights)[:limit]
            rows = {
                row[0]: row[1:]
                for row in connection.execute(_FETCH_QUERY, {**parameters, "row_ids": json.dumps([item.key for item in fused])})
            }
            connection.execute("COMMIT")
        list_names = ("bm25", "vector") if mode == "hybrid" else (mode,)
        hits = []
        for item in fused:
            if item.key not in rows:
                continue
            ranks = dict(zip(list_names, item.ranks))
            hits.append(
                SearchHit(
                    **dict(zip(_CHUNK_COLUMNS, rows[item.key])),
                    score=item.score,
                    bm25_rank=ranks.get("bm25"),
                    vector_rank=ranks.get("vector"),
                    similarity=similarities.get(item.key),
                )
            )
        return hits

    def _workspace_vectors(self, connection: sqlite3.Connection, org_id: str, workspace_id: str) -> _WorkspaceVectors | None:
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
            start = cached if cached is not None and cached.version < version else _WorkspaceVectors.empty(self.dimensions)
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


def _unit_vector(vector: np.ndarray, dimensions: int, *, what: str) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dimensions,):
        raise ValueError(f"{what}: expected a vector of shape ({dimensions},), got {array.shape}")
    norm = float(np.linalg.norm(array))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"{what}: the vector must be finite and non-zero")
    # Normalised here as well: exact cosine is then a dot product, whatever the caller sent.
    return array / np.float32(norm)


class EmbeddedSearchIndex:
    """The `SearchIndex` port on SQLite FTS5 and numpy, in one directory (see the module docstring)."""

    def __init__(
        self,
        *,
        directory: Path,
        dimensions: int = 384,
        max_cached_vectors: int = 500_000,
        bm25_weight: float = DEFAULT_BM25_WEIGHT,
    ) -> None:
        self._directory = directory
        self._bm25_weight = bm25_weight
        self._dimensions = dimensions
        self._max_cached_vectors = max_cached_vectors
        self._pinned: str | None = None  # a generation being rebuilt: its own file, whatever CURRENT says
        self._generation: _Generation | None = None
        self._pointer_stamp: tuple[int, int, int] | None = None
        self._switch_lock = threading.Lock()

    @property
    def generation(self) -> str:
        """The name of the generation this index reads and writes."""
        return self._current().path.name

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        if self._pinned is not None:
            self._open(self._pinned)
            return
        with self._directory_lock():
            pointer = self._directory / "CURRENT"
            if not pointer.exists():
                self._write_pointer(self._reserve_generation())
            current = pointer.read_text().strip()
            for name in self._generation_names():
                # Older than CURRENT: left by a switch that crashed before deleting it. Newer ones
                # may be a rebuild in progress in another process.
                if _generation_number(name) < _generation_number(current):
                    _delete_generation_files(self._directory / name)
        self._follow_pointer()

    async def close(self) -> None:
        with self._switch_lock:
            if self._generation is not None:
                self._generation.retire()
                self._generation = None

    # -- the port ----------------------------------------------------------------------------

    async def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        if chunks:
            await asyncio.to_thread(lambda: self._current().upsert(chunks))

    async def delete_file(self, *, org_id: str, workspace_id: str, file_id: str) -> int:
        return await asyncio.to_thread(
            lambda: self._current().delete_file(org_id=org_id, workspace_id=workspace_id, file_id=file_id)
        )

    async def count(self, *, org_id: str, workspace_id: str, file_id: str | None = None) -> int:
        return await asyncio.to_thread(
            lambda: self._current().count(org_id=org_id, workspace_id=workspace_id, file_id=file_id)
        )

    async def search(
        self,
        scope: SearchScope,
        *,
        text: str,
        vector: np.ndarray | None,
        limit: int = 10,
        mode: SearchMode = "hybrid",
    ) -> list[SearchHit]:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        if mode not in ("hybrid", "bm25", "vector"):
            raise ValueError(f"unknown search mode {mode!r}")
        if scope.file_ids is not None and not scope.file_ids:
            return []
        query_vector = None
        if mode != "bm25":
            if vector is None:
                raise ValueError(f"a {mode} search needs the query's vector")
            query_vector = _unit_vector(vector, self._dimensions, what="the query")
        return await asyncio.to_thread(
            lambda: self._current().search(
                scope, text=text, vector=query_vector, limit=limit, mode=mode, bm25_weight=self._bm25_weight
            )
        )

    # -- blue/green --------------------------------------------------------------------------

    async def fresh_generation(self) -> EmbeddedSearchIndex:
        if self._pinned is not None:
            raise RuntimeError("a generation being rebuilt cannot start another")

        def reserve() -> str:
            with self._directory_lock():
                return self._reserve_generation()

        generation = EmbeddedSearchIndex(
            directory=self._directory, dimensions=self._dimensions, max_cached_vectors=self._max_cached_vectors
        )
        generation._pinned = await asyncio.to_thread(reserve)
        await generation.start()
        return generation

    async def switch_to(self, generation: EmbeddedSearchIndex) -> None:
        name = self._generation_of(generation)
        await generation.close()

        def switch() -> None:
            with self._directory_lock():
                previous = (self._directory / "CURRENT").read_text().strip()
                self._write_pointer(name)
                self._follow_pointer()
                if previous != name:
                    _delete_generation_files(self._directory / previous)

        await asyncio.to_thread(switch)

    async def discard_generation(self, generation: EmbeddedSearchIndex) -> None:
        name = self._generation_of(generation)
        await generation.close()
        await asyncio.to_thread(_delete_generation_files, self._directory / name)

    def _generation_of(self, generation: EmbeddedSearchIndex) -> str:
        if self._pinned is not None:
            raise RuntimeError("switch and discard through the index readers use, not a generation")
        if generation._directory != self._directory or generation._pinned is None:
            raise ValueError("not a generation of this index (use fresh_generation)")
        return generation._pinned

    # -- generations on disk -----------------------------------------------------------------

    def _current(self) -> _Generation:
        """The generation to use now: readers move to a new one as soon as CURRENT names it."""
        if self._generation is None:
            raise RuntimeError("the search index is not started")
        if self._pinned is None:
            self._follow_pointer()
        generation = self._generation
        if generation is None:
            raise RuntimeError("the search index is closed")
        return generation

    def _follow_pointer(self) -> None:
        # One stat per operation: os.replace gives CURRENT a new inode whenever it changes.
        status = os.stat(self._directory / "CURRENT")
        stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
        if stamp == self._pointer_stamp and self._generation is not None:
            return
        with self._switch_lock:
            name = (self._directory / "CURRENT").read_text().strip()
            if self._generation is None or self._generation.path.name != name:
                self._open(name)
            self._pointer_stamp = stamp

    def _open(self, name: str) -> None:
        generation = _Generation(path=self._directory / name, dimensions=self._dimensions, max_cached_vectors=self._max_cached_vectors)
        generation.open()
        previous, self._generation = self._generation, generation
        if previous is not None:
            previous.retire()  # operations already running on it finish there

    def _reserve_generation(self) -> str:
        numbers = [_generation_number(name) for name in self._generation_names()]
        name = f"chunks-{max(numbers, default=0) + 1:06d}.sqlite3"
        (self._directory / name).touch(exist_ok=False)  # an empty file is an empty SQLite database
        return name

    def _generation_names(self) -> list[str]:
        return [path.name for path in self._directory.iterdir() if _GENERATION_FILE.match(path.name)]

    def _write_pointer(self, name: str) -> None:
        temporary = self._directory / "CURRENT.tmp"
        with open(temporary, "w") as pointer:
            pointer.write(name + "\n")
            pointer.flush()
            os.fsync(pointer.fileno())
        os.replace(temporary, self._directory / "CURRENT")  # atomic: readers see the old name or the new
        directory = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    @contextlib.contextmanager
    def _directory_lock(self) -> Iterator[None]:
        descriptor = os.open(self._directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)


def _generation_number(name: str) -> int:
    match = _GENERATION_FILE.match(name)
    if match is None:
        raise ValueError(f"not a generation file name: {name!r}")
    return int(match.group(1))


def _delete_generation_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
