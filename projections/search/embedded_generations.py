"""Generations of the embedded index: the directory of SQLite files behind CURRENT, and one generation's database."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from projections.search.embedded_fts import TermCounts, ranked_by_bm25, scope_token
from projections.search.embedded_schema import (
    ACCESS_COLUMNS,
    BUMP_VERSION,
    CHUNK_COLUMNS,
    FETCH_QUERY,
    INSERT_CHUNK,
    QUERY_TERM_TABLES,
    SCHEMA,
    STORED_CHUNK,
)
from projections.search.embedded_vectors import WorkspaceVectorCache, rank_beside, unit_vector
from projections.search.fusion import DEFAULT_RANK_CONSTANT, reciprocal_rank_fusion
from projections.search.index import IndexedChunk, SearchHit, SearchMode, SearchScope
from projections.search.ordering import stable_ranking, tie_break_key

__all__ = [
    "Generation",
    "delete_generation_files",
    "directory_lock",
    "generation_names",
    "generation_number",
    "reserve_generation",
    "write_pointer",
]

# Layout of the index directory:
#
#     CURRENT                   the name of the generation readers use (replaced with os.replace)
#     chunks-000001.sqlite3     one SQLite database per generation (+ its -wal and -shm files)
#     LOCK                      flock held while generations are created or switched
#
# Each generation holds the chunks (text, metadata, the vector as a float32 BLOB) and an FTS5 index
# over their title, location and text.
_GENERATION_FILE = re.compile(r"^chunks-(\d{6,})\.sqlite3$")


def generation_number(name: str) -> int:
    match = _GENERATION_FILE.match(name)
    if match is None:
        raise ValueError(f"not a generation file name: {name!r}")
    return int(match.group(1))


def generation_names(directory: Path) -> list[str]:
    return [path.name for path in directory.iterdir() if _GENERATION_FILE.match(path.name)]


def reserve_generation(directory: Path) -> str:
    numbers = [generation_number(name) for name in generation_names(directory)]
    name = f"chunks-{max(numbers, default=0) + 1:06d}.sqlite3"
    (directory / name).touch(exist_ok=False)  # an empty file is an empty SQLite database
    return name


def write_pointer(directory: Path, name: str) -> None:
    temporary = directory / "CURRENT.tmp"
    with open(temporary, "w") as pointer:
        pointer.write(name + "\n")
        pointer.flush()
        os.fsync(pointer.fileno())
    os.replace(temporary, directory / "CURRENT")  # atomic: readers see the old name or the new
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    descriptor = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def delete_generation_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


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


class Generation:
    """One generation's SQLite file: a pool of connections, the workspace vector cache and the terms' chunk counts."""

    def __init__(self, *, path: Path, dimensions: int, max_cached_vectors: int) -> None:
        self.path = path
        self.dimensions = dimensions
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._write_lock = threading.Lock()
        self._vector_cache = WorkspaceVectorCache(dimensions=dimensions, max_cached_vectors=max_cached_vectors)
        self._term_counts = TermCounts()
        self._retired = False

    def open(self) -> None:
        with self.connection() as connection:
            connection.executescript(SCHEMA)
            connection.execute("INSERT OR IGNORE INTO settings VALUES ('dimensions', ?)", (str(self.dimensions),))
            (stored,) = connection.execute("SELECT value FROM settings WHERE name = 'dimensions'").fetchone()
            if int(stored) != self.dimensions:
                raise ValueError(f"{self.path} holds {stored}-dimensional vectors, not {self.dimensions}")

    def retire(self) -> None:
        """Close idle connections now, and each busy one as it is returned."""
        self._retired = True
        self._vector_cache.clear()
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
            connection.executescript(QUERY_TERM_TABLES)
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
                stored = connection.execute(STORED_CHUNK, (row["chunk_id"],)).fetchone()
                if stored is not None:
                    if stored[1:] == tuple(row[column] for column in (*CHUNK_COLUMNS, "vector")):
                        continue  # a redelivery: nothing changes, caches stay valid
                    connection.execute("DELETE FROM chunks WHERE row_id = ?", (stored[0],))
                    touched.add((stored[3], stored[4]))  # a chunk that moves changes the workspace it leaves
                row_id = connection.execute(INSERT_CHUNK, tuple(row[column] for column in ACCESS_COLUMNS)).lastrowid
                connection.execute(
                    "INSERT INTO chunk_texts (row_id, title, location, text, scope_token) VALUES (?, ?, ?, ?, ?)",
                    (row_id, row["title"], row["location"], row["text"], scope_token(row["org_id"], row["workspace_id"])),
                )
                connection.execute("INSERT INTO chunk_vectors (row_id, vector) VALUES (?, ?)", (row_id, row["vector"]))
                touched.add((row["org_id"], row["workspace_id"]))
            connection.executemany(BUMP_VERSION, sorted(touched))

    def _row(self, chunk: IndexedChunk) -> dict[str, Any]:
        if chunk.acl not in ("workspace", "owner"):
            raise ValueError(f"chunk {chunk.chunk_id}: unknown acl {chunk.acl!r}")
        row: dict[str, Any] = {column: getattr(chunk, column) for column in CHUNK_COLUMNS}
        row["vector"] = unit_vector(chunk.vector, self.dimensions, what=f"chunk {chunk.chunk_id}").tobytes()
        return row

    def delete_file(self, *, org_id: str, workspace_id: str, file_id: str) -> int:
        with self.writing() as connection:
            deleted = connection.execute(
                "DELETE FROM chunks WHERE org_id = ? AND workspace_id = ? AND file_id = ?", (org_id, workspace_id, file_id)
            ).rowcount
            if deleted:
                connection.execute(BUMP_VERSION, (org_id, workspace_id))
        return deleted

    # -- reads -------------------------------------------------------------------------------

    def count(self, *, org_id: str, workspace_id: str, file_id: str | None) -> int:
        with self.connection() as connection:
            (count,) = connection.execute(
                "SELECT count(*) FROM chunks WHERE org_id = ? AND workspace_id = ? AND (? IS NULL OR file_id = ?)",
                (org_id, workspace_id, file_id, file_id),
            ).fetchone()
        return count

    def has_chunks(self, *, org_id: str, workspace_id: str) -> bool:
        with self.connection() as connection:
            (held,) = connection.execute(
                "SELECT EXISTS (SELECT 1 FROM chunks WHERE org_id = ? AND workspace_id = ?)", (org_id, workspace_id)
            ).fetchone()
        return bool(held)

    @property
    def has_idle_connection(self) -> bool:
        """Whether a connection waits in the pool (taking one then opens nothing: no file opened, no WAL set up)."""
        return not self._idle.empty()

    def search(
        self,
        scope: SearchScope,
        *,
        text: str,
        vector: np.ndarray | None,
        limit: int,
        window: int,
        mode: SearchMode,
        bm25_weight: float,
    ) -> list[SearchHit]:
        parameters = {
            "org_id": scope.org_id,
            "workspace_id": scope.workspace_id,
            "user_id": scope.user_id,
            "file_ids": None if scope.file_ids is None else json.dumps(list(scope.file_ids)),
        }
        with self.connection() as connection:
            connection.execute("BEGIN")  # one snapshot for both lists and the final read
            bm25_scores: dict[int, float] = {}
            vector_ranking: Future[list[tuple[int, float]]] | None = None
            vectors = None
            if mode in ("hybrid", "vector"):
                assert vector is not None
                vectors = self._vector_cache.workspace_vectors(connection, scope.org_id, scope.workspace_id)
                if vectors is not None:
                    vector_ranking = rank_beside(vectors, scope, vector, window=window, alone=mode == "vector")
            if mode in ("hybrid", "bm25"):
                token = scope_token(scope.org_id, scope.workspace_id)
                bm25_scores = ranked_by_bm25(
                    connection, text, scope=token, parameters=parameters, window=window, term_counts=self._term_counts
                ).scores
            vector_ranked = dict(vector_ranking.result()) if vector_ranking is not None else {}
            candidates = {*bm25_scores, *vector_ranked}
            rows = {
                row[0]: dict(zip(CHUNK_COLUMNS, row[1:]))
                for row in connection.execute(FETCH_QUERY, {**parameters, "row_ids": json.dumps(sorted(candidates))})
            }
            connection.execute("COMMIT")
        similarities = dict(vector_ranked)
        if vectors is not None and vector is not None:
            # BM25-only candidates get their similarity too: the relevance gate reads it for every hit.
            similarities |= vectors.similarities(sorted(set(bm25_scores) - set(vector_ranked)), vector)

        def tie_break(row_id: int) -> tuple:
            row = rows.get(row_id)
            if row is None:  # left the scope between the lists and the read: dropped below
                return ("", 0, "", "")
            return tie_break_key(title=row["title"], ordinal=row["ordinal"], file_id=row["file_id"], chunk_id=row["chunk_id"])

        rankings: list[list[int]] = []
        if mode in ("hybrid", "bm25"):  # FTS5's bm25() is lower-is-better
            rankings.append(stable_ranking(bm25_scores, score=bm25_scores.__getitem__, key=tie_break, higher_is_better=False)[:window])
        if mode in ("hybrid", "vector"):
            rankings.append(stable_ranking(vector_ranked, score=vector_ranked.__getitem__, key=tie_break)[:window])
        weights = (bm25_weight, 1.0) if mode == "hybrid" else None
        fused = reciprocal_rank_fusion(rankings, rank_constant=DEFAULT_RANK_CONSTANT, weights=weights, tie_break=tie_break)[:limit]
        list_names = ("bm25", "vector") if mode == "hybrid" else (mode,)
        hits = []
        for item in fused:
            if item.key not in rows:
                continue
            ranks = dict(zip(list_names, item.ranks))
            hits.append(
                SearchHit(
                    **rows[item.key],
                    score=item.score,
                    bm25_rank=ranks.get("bm25"),
                    vector_rank=ranks.get("vector"),
                    similarity=similarities.get(item.key),
                )
            )
        return hits
