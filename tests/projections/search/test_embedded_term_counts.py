"""The keyword search keeps its words' chunk counts between searches, and never past a write to the index.

The counts are fts5vocab's (each a walk of the term's postings); kept ones must be exactly what fts5vocab would say in
the reader's snapshot after any write, whichever connection or process made it.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from projections.search import embedded_fts
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.embedded_fts import TermCounts, _chunks_holding, _index_records, _index_terms
from projections.search.embedded_schema import QUERY_TERM_TABLES
from projections.search.index import IndexedChunk, SearchScope

WORDS = [f"word{number}" for number in range(40)]


def text_of(generator: random.Random, length: int) -> str:
    return " ".join(generator.choices(WORDS, weights=[1 / (rank + 1) for rank in range(len(WORDS))], k=length))


def chunk(number: int, text: str, *, file: int, vectors: np.random.Generator) -> IndexedChunk:
    vector = vectors.standard_normal(384).astype(np.float32)
    return IndexedChunk(
        chunk_id=f"chunk-{number:04d}", file_id=f"file-{file:02d}", org_id="org", workspace_id="ws", owner_id="alice",
        acl="workspace", title="Notes", location="", ordinal=number, text=text, vector=vector / np.linalg.norm(vector),
    )


@pytest.fixture
def vocabulary_walks(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The terms of each fts5vocab count the code under test runs."""
    walks: list[set[str]] = []
    walk = embedded_fts._chunks_holding

    def recording(connection: sqlite3.Connection, terms: set[str]) -> dict[str, int]:
        walks.append(set(terms))
        return walk(connection, terms)

    monkeypatch.setattr(embedded_fts, "_chunks_holding", recording)
    return walks


async def test_kept_counts_are_fts5vocab_s_after_every_write_by_either_of_two_processes(
    tmp_path: Path, vocabulary_walks: list[set[str]]
) -> None:
    """Two index instances on one directory write in turn (each its own connections, as two processes): chunks
    added, files deleted, chunks rewritten with as many words as before (the row and token totals unchanged) and
    chunks without text. After each write the kept counts equal a fresh count in the reader's snapshot; asked
    again with no write between, nothing is counted."""
    generator, vectors = random.Random(21), np.random.default_rng(21)
    directory = tmp_path / "search"
    here, there = EmbeddedSearchIndex(directory=directory), EmbeddedSearchIndex(directory=directory)
    await here.start()
    await there.start()
    chunks = [chunk(number, text_of(generator, 30), file=number // 10, vectors=vectors) for number in range(60)]
    await here.upsert(chunks)
    reader = sqlite3.connect(directory / here.generation, isolation_level=None)
    reader.executescript(QUERY_TERM_TABLES)
    terms = set(_index_terms(reader, WORDS) or [])
    assert len(terms) == len(WORDS)
    counts = TermCounts()
    writes = {"added": 0, "deleted": 0, "rewritten": 0, "empty": 0}
    try:
        for step in range(48):
            writer = here if step % 2 else there
            write = ("added", "deleted", "rewritten", "empty")[step % 4]
            if write == "added":
                chunks.append(chunk(len(chunks), text_of(generator, 25), file=len(chunks) // 10, vectors=vectors))
                await writer.upsert(chunks[-1:])
            elif write == "deleted":
                file = generator.choice(sorted({c.file_id for c in chunks}))
                await writer.delete_file(org_id="org", workspace_id="ws", file_id=file)
                chunks = [c for c in chunks if c.file_id != file]
            elif write == "rewritten":  # other words, as many of them: FTS5's averages record stays as it was
                position = generator.randrange(len(chunks))
                chunks[position] = replace(chunks[position], text=text_of(generator, len(chunks[position].text.split())))
                await writer.upsert([chunks[position]])
            else:
                chunks.append(chunk(len(chunks), "", file=len(chunks) // 10, vectors=vectors))
                await writer.upsert(chunks[-1:])
            writes[write] += 1

            reader.execute("BEGIN")
            _, contents = _index_records(reader)
            kept = counts.chunks_holding(reader, terms, contents=contents)
            vocabulary_walks.clear()
            assert counts.chunks_holding(reader, terms, contents=contents) == kept
            assert vocabulary_walks == []  # kept: nothing walked again
            fresh = _chunks_holding(reader, terms)
            reader.execute("COMMIT")
            assert kept == {term: fresh.get(term, 0) for term in terms}, (step, write)
    finally:
        reader.close()
        await here.close()
        await there.close()
    assert min(writes.values()) == 12


async def test_a_search_counts_only_the_words_no_search_before_it_counted(
    tmp_path: Path, vocabulary_walks: list[set[str]]
) -> None:
    """Through the product's index: a second search sharing words with the first walks only its new word's postings,
    and after a write every word is counted again."""
    generator, vectors = random.Random(22), np.random.default_rng(22)
    index = EmbeddedSearchIndex(directory=tmp_path / "search")
    await index.start()
    scope = SearchScope(org_id="org", workspace_id="ws", user_id="alice")
    try:
        await index.upsert([chunk(number, text_of(generator, 30), file=0, vectors=vectors) for number in range(40)])
        for text in ("word3 word7", "word3 word7 word11", "word3 word7 word11"):
            await index.search(scope, text=text, vector=None, limit=5, mode="bm25")
        await index.upsert([chunk(40, "word11 word12", file=1, vectors=vectors)])
        hits = await index.search(scope, text="word3 word7 word11", vector=None, limit=5, mode="bm25")
    finally:
        await index.close()
    assert vocabulary_walks == [{"word3", "word7"}, {"word11"}, {"word3", "word7", "word11"}]
    assert hits
