"""The search index on one machine: SQLite FTS5 (BM25) + exact cosine over in-memory vectors, fused with RRF.

Layout of the index directory:

    CURRENT                   the name of the generation readers use (replaced with os.replace)
    chunks-000001.sqlite3     one SQLite database per generation (+ its -wal and -shm files)
    LOCK                      flock held while generations are created or switched

Each generation holds the chunks (text, metadata, the vector as a float32 BLOB) and an FTS5 index
over their title, location and text. The scope filter (org, workspace, ACL, files) runs inside
both ranked queries: in the FTS query's WHERE clause (and, for org and workspace, inside the MATCH
expression itself), and as the mask that picks the vector candidates before they are ranked.
Vectors are read once per workspace into a matrix cached in memory and re-read when the
workspace's version (bumped in every write transaction) moves, so several processes may share
the directory. All SQLite and numpy work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import queue
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from projections.search.fusion import DEFAULT_RANK_CONSTANT, reciprocal_rank_fusion
from projections.search.index import IndexedChunk, SearchHit, SearchMode, SearchScope

__all__ = ["EmbeddedSearchIndex", "RANK_WINDOW", "fts_match_expression", "scope_token"]

# Each list (BM25, vectors) contributes its best max(limit, RANK_WINDOW) chunks to the fusion.
RANK_WINDOW = 50
MAX_LIMIT = 1000
# Words of the query that reach FTS5; the rest of a pasted page adds cost, not recall.
MAX_QUERY_WORDS = 64

_GENERATION_FILE = re.compile(r"^chunks-(\d{6,})\.sqlite3$")
_CHUNK_COLUMNS = ("chunk_id", "file_id", "org_id", "workspace_id", "owner_id", "acl", "title", "location", "ordinal", "text")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    -- AUTOINCREMENT: a row id is never reused, so a stale cached id cannot name another chunk.
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id TEXT NOT NULL UNIQUE,
    file_id TEXT NOT NULL,
    org_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    acl TEXT NOT NULL CHECK (acl IN ('workspace', 'owner')),
    title TEXT NOT NULL,
    location TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    scope_token TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (org_id, workspace_id, file_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    title, location, text, scope_token,
    content='chunks', content_rowid='row_id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunks_inserted AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, title, location, text, scope_token)
    VALUES (new.row_id, new.title, new.location, new.text, new.scope_token);
END;
CREATE TRIGGER IF NOT EXISTS chunks_deleted AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, title, location, text, scope_token)
    VALUES ('delete', old.row_id, old.title, old.location, old.text, old.scope_token);
END;
CREATE TRIGGER IF NOT EXISTS chunks_updated AFTER UPDATE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, title, location, text, scope_token)
    VALUES ('delete', old.row_id, old.title, old.location, old.text, old.scope_token);
    INSERT INTO chunks_fts (rowid, title, location, text, scope_token)
    VALUES (new.row_id, new.title, new.location, new.text, new.scope_token);
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

# The scope filter, on the chunks table aliased `c`. Parameters: org, workspace, user, file ids
# (a JSON array, or NULL for the whole workspace).
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
SELECT c.row_id, {", ".join(f"c.{column}" for column in _CHUNK_COLUMNS)}
FROM chunks AS c
WHERE c.row_id IN (SELECT value FROM json_each(:row_ids)) AND {_IN_SCOPE}
"""

_UPSERT = f"""
INSERT INTO chunks ({", ".join(_CHUNK_COLUMNS)}, scope_token, vector)
VALUES ({", ".join(f":{column}" for column in _CHUNK_COLUMNS)}, :scope_token, :vector)
ON CONFLICT (chunk_id) DO UPDATE SET
    {", ".join(f"{column} = excluded.{column}" for column in (*_CHUNK_COLUMNS[1:], "scope_token", "vector"))}
"""

_BUMP_VERSION = """
INSERT INTO workspace_versions (org_id, workspace_id, version) VALUES (?, ?, 1)
ON CONFLICT (org_id, workspace_id) DO UPDATE SET version = version + 1
"""

_WORD = re.compile(r"[^\W_]+")


def scope_token(org_id: str, workspace_id: str) -> str:
    """One FTS token naming a workspace, so MATCH itself walks only that workspace's postings.

    Hex between a letter and a digit: the unicode61 tokenizer keeps it whole, and no Porter rule
    (all suffix rules on letters) rewrites a token that ends in a digit.
    """
    digest = hashlib.blake2b(f"{org_id}\x00{workspace_id}".encode(), digest_size=16).hexdigest()
    return f"w{digest}0"


def fts_match_expression(text: str, *, scope: str) -> str | None:
    """An FTS5 MATCH expression for plain user text: any of its words, within the scope token.

    User text is never FTS5 syntax: each word (letters and digits only) becomes a quoted string,
    so `NEAR`, `AND`, `*`, `-`, `^`, `:`, quotes and parentheses are words or nothing. None when
    the text has no words.
    """
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(text)))[:MAX_QUERY_WORDS]
    if not words:
        return None
    any_word = " OR ".join('"' + word.replace('"', '""') + '"' for word in words)
    return f'scope_token : "{scope}" AND {{title location text}} : ({any_word})'


@dataclass(frozen=True, kw_only=True)
class _WorkspaceVectors:
    """One workspace's vectors as a matrix, with the columns the scope filter needs, as of `version`."""

    version: int
    row_ids: np.ndarray  # int64 (n,)
    matrix: np.ndarray  # float32 (n, d), rows L2-normalised
    shared: np.ndarray  # bool (n,): acl == "workspace"
    owner_codes: np.ndarray  # int32 (n,), codes of owner_ids
    owner_code_by_id: dict[str, int]
    file_codes: np.ndarray  # int32 (n,), codes of file_ids
    file_code_by_id: dict[str, int]

    @classmethod
    def load(cls, connection: sqlite3.Connection, *, org_id: str, workspace_id: str, version: int, dimensions: int) -> _WorkspaceVectors:
        rows = connection.execute(
            "SELECT row_id, owner_id, acl, file_id, vector FROM chunks WHERE org_id = ? AND workspace_id = ? ORDER BY row_id",
            (org_id, workspace_id),
        ).fetchall()
        owner_code_by_id: dict[str, int] = {}
        file_code_by_id: dict[str, int] = {}
        owner_codes = np.fromiter((owner_code_by_id.setdefault(row[1], len(owner_code_by_id)) for row in rows), np.int32, len(rows))
        file_codes = np.fromiter((file_code_by_id.setdefault(row[3], len(file_code_by_id)) for row in rows), np.int32, len(rows))
        matrix = np.frombuffer(b"".join(row[4] for row in rows), dtype=np.float32).reshape(len(rows), dimensions)
        return cls(
            version=version,
            row_ids=np.fromiter((row[0] for row in rows), np.int64, len(rows)),
            matrix=matrix,
            shared=np.fromiter((row[2] == "workspace" for row in rows), bool, len(rows)),
            owner_codes=owner_codes,
            owner_code_by_id=owner_code_by_id,
            file_codes=file_codes,
            file_code_by_id=file_code_by_id,
        )

    def rank(self, scope: SearchScope, query: np.ndarray, *, window: int) -> list[int]:
        """Row ids of the `window` visible chunks most similar to `query`, best first."""
        visible = self.shared | (self.owner_codes == self.owner_code_by_id.get(scope.user_id, -1))
        if scope.file_ids is not None:
            wanted = [self.file_code_by_id[file_id] for file_id in scope.file_ids if file_id in self.file_code_by_id]
            visible &= np.isin(self.file_codes, wanted)
        candidates = np.flatnonzero(visible)
        if candidates.size == 0:
            return []
        # Only candidates are ranked. For a small share, multiply just their rows; for most of
        # the matrix, one pass over all of it is cheaper than copying the rows out first (the
        # scores of the others are computed and dropped unread).
        if candidates.size * 4 < len(self.row_ids):
            scores = self.matrix[candidates] @ query
        else:
            scores = (self.matrix @ query)[candidates]
        top = min(window, candidates.size)
        best = np.argpartition(-scores, top - 1)[:top]
        best = best[np.argsort(-scores[best], kind="stable")]
        return self.row_ids[candidates[best]].tolist()


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
            connection.execute("PRAGMA journal_mode = WAL")
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
            touched = {(row["org_id"], row["workspace_id"]) for row in rows}
            for row in rows:  # a chunk that moves also changes the workspace it leaves
                previous = connection.execute(
                    "SELECT org_id, workspace_id FROM chunks WHERE chunk_id = ?", (row["chunk_id"],)
                ).fetchone()
                if previous is not None:
                    touched.add(previous)
            connection.executemany(_UPSERT, rows)
            connection.executemany(_BUMP_VERSION, sorted(touched))

    def _row(self, chunk: IndexedChunk) -> dict[str, object]:
        if chunk.acl not in ("workspace", "owner"):
            raise ValueError(f"chunk {chunk.chunk_id}: unknown acl {chunk.acl!r}")
        row: dict[str, object] = {column: getattr(chunk, column) for column in _CHUNK_COLUMNS}
        row["scope_token"] = scope_token(chunk.org_id, chunk.workspace_id)
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

    def search(self, scope: SearchScope, *, text: str, vector: np.ndarray | None, limit: int, mode: SearchMode) -> list[SearchHit]:
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
            if mode in ("hybrid", "bm25"):
                match = fts_match_expression(text, scope=scope_token(scope.org_id, scope.workspace_id))
                bm25_ids = [] if match is None else [
                    row_id for (row_id,) in connection.execute(_BM25_QUERY, {**parameters, "match": match, "window": window})
                ]
                rankings.append(bm25_ids)
            if mode in ("hybrid", "vector"):
                assert vector is not None
                vectors = self._workspace_vectors(connection, scope.org_id, scope.workspace_id)
                rankings.append(vectors.rank(scope, vector, window=window) if vectors is not None else [])
            fused = reciprocal_rank_fusion(rankings, rank_constant=DEFAULT_RANK_CONSTANT)[:limit]
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
            loaded = _WorkspaceVectors.load(
                connection, org_id=org_id, workspace_id=workspace_id, version=version, dimensions=self.dimensions
            )
            if cached is None or cached.version < version:  # a reader on an older snapshot keeps the newer entry
                self._vectors[key] = loaded
                self._vectors.move_to_end(key)
                self._evict()
            return loaded

    def _evict(self) -> None:
        held = sum(len(entry.row_ids) for entry in self._vectors.values())
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

    def __init__(self, *, directory: Path, dimensions: int = 384, max_cached_vectors: int = 500_000) -> None:
        self._directory = directory
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
            lambda: self._current().search(scope, text=text, vector=query_vector, limit=limit, mode=mode)
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
