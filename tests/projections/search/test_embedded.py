"""The embedded index's own parts: the FTS5 query builder, the scope token, the directory of
generations, and the vector cache shared by several index instances (processes) on one directory.
The port's behaviour is in test_index_contract.py."""

import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.search.embedded import EmbeddedSearchIndex
from projections.search.embedded_fts import ENGLISH_STOP_WORDS, MAX_QUERY_WORDS, fts_match_expression, scope_token
from projections.search.index import IndexedChunk, SearchScope

SCOPE = SearchScope(org_id="org", workspace_id="ws", user_id="alice")


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return vector / np.linalg.norm(vector)


def chunk(chunk_id: str, text: str, *, file_id: str = "file", workspace_id: str = "ws", seed: int = 0) -> IndexedChunk:
    return IndexedChunk(
        chunk_id=chunk_id, file_id=file_id, org_id="org", workspace_id=workspace_id, owner_id="alice",
        acl="workspace", title="Notes", ordinal=0, text=text, vector=unit(seed),
    )


# -- the query builder -------------------------------------------------------------------------


def test_each_word_becomes_a_quoted_string_inside_the_scope() -> None:
    assert fts_match_expression('Fox "NEAR" (dog*) -cat fox', scope="wabc0") == (
        'scope_token : "wabc0" AND {title location text} : ("fox" OR "near" OR "dog" OR "cat")'
    )


def test_stop_words_are_left_out_unless_nothing_else_is_left() -> None:
    assert fts_match_expression("the licence of the software", scope="w0") == (
        'scope_token : "w0" AND {title location text} : ("licence" OR "software")'
    )
    assert fts_match_expression("To be or not to be", scope="w0") == (
        'scope_token : "w0" AND {title location text} : ("to" OR "be" OR "or" OR "not")'
    )
    assert {"the", "and", "of"} <= ENGLISH_STOP_WORDS


def test_text_without_words_has_no_expression() -> None:
    for text in ["", "   ", '"', "*", "-", "()", "^:", "🙂", "_"]:
        assert fts_match_expression(text, scope="w0") is None


def test_long_queries_keep_their_first_words() -> None:
    text = " ".join(f"word{number}" for number in range(200))
    expression = fts_match_expression(text, scope="w0")
    assert expression is not None and expression.count(" OR ") == MAX_QUERY_WORDS - 1


@pytest.fixture(scope="module")
def fts_table() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    connection.execute(
        "CREATE VIRTUAL TABLE t USING fts5(title, location, text, scope_token, tokenize='porter unicode61 remove_diacritics 2')"
    )
    connection.execute("INSERT INTO t VALUES ('near', 'or', 'and not * - ( ) \" fox', 'w0')")
    return connection


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_gives_an_expression_fts5_accepts(fts_table: sqlite3.Connection, text: str) -> None:
    expression = fts_match_expression(text, scope="w0")
    if expression is not None:
        assert expression.startswith('scope_token : "w0" AND {title location text} : (')
        (count,) = fts_table.execute("SELECT count(*) FROM t WHERE t MATCH ?", (expression,)).fetchone()
        assert count in (0, 1)


def test_scope_tokens_are_one_fts_token_per_workspace(fts_table: sqlite3.Connection) -> None:
    token = scope_token("org", "ws")
    assert token != scope_token("org", "ws2") != scope_token("org2", "ws")
    assert scope_token("a\x00b", "c") != scope_token("a", "b\x00c")
    # The tokenizer keeps it whole: a MATCH on it finds the row holding it.
    fts_table.execute("INSERT INTO t VALUES ('x', 'x', 'x', ?)", (token,))
    assert fts_table.execute("SELECT count(*) FROM t WHERE t MATCH ?", (f'scope_token : "{token}"',)).fetchone() == (1,)


# -- one directory, several instances ----------------------------------------------------------


async def test_another_instance_sees_writes_made_after_it_cached_the_workspace(tmp_path: Path) -> None:
    reader, writer = EmbeddedSearchIndex(directory=tmp_path), EmbeddedSearchIndex(directory=tmp_path)
    await reader.start()
    await writer.start()
    try:
        await writer.upsert([chunk("c1", "first", seed=1), chunk("c2", "second", seed=2)])
        assert {hit.chunk_id for hit in await reader.search(SCOPE, text="", vector=unit(1), mode="vector")} == {"c1", "c2"}
        await writer.upsert([chunk("c3", "third", seed=3)])
        await writer.delete_file(org_id="org", workspace_id="ws", file_id="none")  # deletes nothing
        found = await reader.search(SCOPE, text="", vector=unit(3), mode="vector")
        assert found[0].chunk_id == "c3" and len(found) == 3
        await writer.upsert([chunk("c1", "first", file_id="other", seed=1)])
        await writer.delete_file(org_id="org", workspace_id="ws", file_id="file")
        assert [hit.chunk_id for hit in await reader.search(SCOPE, text="", vector=unit(1), mode="vector")] == ["c1"]
    finally:
        await reader.close()
        await writer.close()


async def test_the_vector_cache_follows_many_deletes_and_inserts(embedded_index: EmbeddedSearchIndex) -> None:
    # Enough deletes to compact the cached matrix, and inserts past its spare room.
    await embedded_index.upsert([chunk(f"c{n}", f"text {n}", file_id=f"f{n % 4}", seed=n) for n in range(40)])
    expected = {f"c{n}" for n in range(40)}
    for round_number in range(3):
        hits = await embedded_index.search(SCOPE, text="", vector=unit(0), limit=1000, mode="vector")
        assert {hit.chunk_id for hit in hits} == expected
        await embedded_index.delete_file(org_id="org", workspace_id="ws", file_id=f"f{round_number}")
        expected -= {f"c{n}" for n in range(40) if n % 4 == round_number}
        new = [chunk(f"n{round_number}-{n}", "new", file_id="f3", seed=100 + n) for n in range(300)]
        await embedded_index.upsert(new)
        expected |= {item.chunk_id for item in new}
        hits = await embedded_index.search(SCOPE, text="", vector=new[7].vector, limit=1000, mode="vector")
        # Every round's n*-7 has the same vector: the tie goes to the smallest chunk id (`ordering.py`).
        assert hits[0].chunk_id == "n0-7" and {hit.chunk_id for hit in hits} == expected


async def test_a_chunk_that_moves_workspace_leaves_the_old_one(embedded_index: EmbeddedSearchIndex) -> None:
    await embedded_index.upsert([chunk("c1", "moving text", seed=1)])
    assert len(await embedded_index.search(SCOPE, text="moving", vector=unit(1))) == 1
    await embedded_index.upsert([chunk("c1", "moving text", workspace_id="ws2", seed=1)])
    assert await embedded_index.search(SCOPE, text="moving", vector=unit(1)) == []
    moved = SearchScope(org_id="org", workspace_id="ws2", user_id="alice")
    assert [hit.chunk_id for hit in await embedded_index.search(moved, text="moving", vector=unit(1))] == ["c1"]


async def test_a_new_directory_starts_at_generation_one_and_reopens_it(tmp_path: Path) -> None:
    index = EmbeddedSearchIndex(directory=tmp_path / "search")
    await index.start()
    await index.upsert([chunk("c1", "kept across restarts")])
    assert index.generation == "chunks-000001.sqlite3"
    await index.close()
    assert (tmp_path / "search" / "CURRENT").read_text() == "chunks-000001.sqlite3\n"
    reopened = EmbeddedSearchIndex(directory=tmp_path / "search")
    await reopened.start()
    try:
        assert await reopened.count(org_id="org", workspace_id="ws") == 1
    finally:
        await reopened.close()


async def test_a_generation_left_behind_by_a_crashed_switch_is_removed_at_start(tmp_path: Path) -> None:
    index = EmbeddedSearchIndex(directory=tmp_path)
    await index.start()
    fresh = await index.fresh_generation()
    await fresh.close()
    # As if the process died after CURRENT moved but before the old file was deleted:
    (tmp_path / "CURRENT").write_text("chunks-000002.sqlite3\n")
    await index.close()
    restarted = EmbeddedSearchIndex(directory=tmp_path)
    await restarted.start()
    try:
        assert restarted.generation == "chunks-000002.sqlite3"
        assert not (tmp_path / "chunks-000001.sqlite3").exists()
    finally:
        await restarted.close()


async def test_an_index_refuses_vectors_of_another_size(embedded_index: EmbeddedSearchIndex) -> None:
    wrong = replace(chunk("c1", "x"), vector=np.ones(3, np.float32))
    with pytest.raises(ValueError):
        await embedded_index.upsert([wrong])
    with pytest.raises(ValueError):
        await embedded_index.search(SCOPE, text="x", vector=np.zeros(384, np.float32))
    with pytest.raises(ValueError):
        await embedded_index.search(SCOPE, text="x", vector=None, mode="hybrid")


async def test_hits_carry_their_cosine_similarity_to_the_query(embedded_index: EmbeddedSearchIndex) -> None:
    await embedded_index.upsert([chunk("near", "alpha", seed=1), chunk("far", "beta", seed=2)])
    scope = SearchScope(org_id="org", workspace_id="ws", user_id="u")
    hits = {hit.chunk_id: hit for hit in await embedded_index.search(scope, text="gamma", vector=unit(1), mode="vector")}
    assert hits["near"].similarity == pytest.approx(1.0, abs=1e-5)
    assert hits["far"].similarity == pytest.approx(float(unit(1) @ unit(2)), abs=1e-5)
    [lexical] = await embedded_index.search(scope, text="alpha", vector=None, mode="bm25")
    assert lexical.similarity is None  # only the vector list measures it


def test_processes_opening_a_new_index_together_all_start(tmp_path: Path) -> None:
    """An ingester and a prompt builder starting at once on a fresh directory (both switch it to WAL)."""
    import subprocess
    import sys

    script = (
        "import asyncio, sys; from pathlib import Path; from projections.search.embedded import EmbeddedSearchIndex\n"
        "async def main():\n"
        "    index = EmbeddedSearchIndex(directory=Path(sys.argv[1])); await index.start(); await index.close()\n"
        "asyncio.run(main())\n"
    )
    repo = Path(__file__).resolve().parents[3]
    for round_number in range(3):
        directory = tmp_path / f"search-{round_number}"
        processes = [
            subprocess.Popen([sys.executable, "-c", script, str(directory)], cwd=repo, stderr=subprocess.PIPE)
            for _ in range(3)
        ]
        results = [(process.wait(timeout=60), process.stderr.read().decode()) for process in processes]
        assert all(code == 0 for code, _ in results), [error for _, error in results]
