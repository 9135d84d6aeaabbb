"""The search index on one machine: SQLite FTS5 (BM25) + exact cosine over in-memory vectors, fused with RRF."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from projections.search.embedded_generations import (
    Generation,
    delete_generation_files,
    directory_lock,
    generation_names,
    generation_number,
    reserve_generation,
    write_pointer,
)
from projections.search.embedded_vectors import unit_vector
from projections.search.fusion import DEFAULT_BM25_WEIGHT
from projections.search.index import IndexedChunk, SearchHit, SearchMode, SearchScope

__all__ = ["EmbeddedSearchIndex", "MAX_LIMIT", "RANK_WINDOW"]

# Each list (BM25, vectors) contributes its best max(limit, RANK_WINDOW) chunks to the fusion.
RANK_WINDOW = 50
MAX_LIMIT = 1000


class EmbeddedSearchIndex:
    """The `SearchIndex` port on SQLite FTS5 and numpy, in one directory (its layout: `embedded_generations.py`).

    All SQLite and numpy work runs in worker threads.
    """

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
        self._generation: Generation | None = None
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
        with directory_lock(self._directory):
            pointer = self._directory / "CURRENT"
            if not pointer.exists():
                write_pointer(self._directory, reserve_generation(self._directory))
            current = pointer.read_text().strip()
            for name in generation_names(self._directory):
                # Older than CURRENT: left by a switch that crashed before deleting it. Newer ones
                # may be a rebuild in progress in another process.
                if generation_number(name) < generation_number(current):
                    delete_generation_files(self._directory / name)
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

    async def has_chunks(self, *, org_id: str, workspace_id: str) -> bool:
        generation = self._current()
        if generation.has_idle_connection:
            # One index probe on a pooled connection (microseconds), asked on the way to every turn's first token:
            # cheaper than a hop to a thread and back, which on a busy event loop waits behind whatever is queued.
            return generation.has_chunks(org_id=org_id, workspace_id=workspace_id)
        return await asyncio.to_thread(lambda: generation.has_chunks(org_id=org_id, workspace_id=workspace_id))

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
            query_vector = unit_vector(vector, self._dimensions, what="the query")
        return await asyncio.to_thread(
            lambda: self._current().search(
                scope,
                text=text,
                vector=query_vector,
                limit=limit,
                window=max(limit, RANK_WINDOW),
                mode=mode,
                bm25_weight=self._bm25_weight,
            )
        )

    # -- blue/green --------------------------------------------------------------------------

    async def fresh_generation(self) -> EmbeddedSearchIndex:
        if self._pinned is not None:
            raise RuntimeError("a generation being rebuilt cannot start another")

        def reserve() -> str:
            with directory_lock(self._directory):
                return reserve_generation(self._directory)

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
            with directory_lock(self._directory):
                previous = (self._directory / "CURRENT").read_text().strip()
                write_pointer(self._directory, name)
                self._follow_pointer()
                if previous != name:
                    delete_generation_files(self._directory / previous)

        await asyncio.to_thread(switch)

    async def discard_generation(self, generation: EmbeddedSearchIndex) -> None:
        name = self._generation_of(generation)
        await generation.close()
        await asyncio.to_thread(delete_generation_files, self._directory / name)

    def _generation_of(self, generation: EmbeddedSearchIndex) -> str:
        if self._pinned is not None:
            raise RuntimeError("switch and discard through the index readers use, not a generation")
        if generation._directory != self._directory or generation._pinned is None:
            raise ValueError("not a generation of this index (use fresh_generation)")
        return generation._pinned

    # -- the generation in use ---------------------------------------------------------------

    def _current(self) -> Generation:
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
        generation = Generation(path=self._directory / name, dimensions=self._dimensions, max_cached_vectors=self._max_cached_vectors)
        generation.open()
        previous, self._generation = self._generation, generation
        if previous is not None:
            previous.retire()  # operations already running on it finish there
