"""The embedded index's keyword ranking leaves common words out of what it matches, and ranks exactly as before.

Over a real index (FTS5 in the generation's SQLite file), every search is compared with the one FTS5 query
over all the words that it replaces: the same chunks in the same order with the same scores, bit for bit
when that query names the words in the same order (FTS5 sums a chunk's score word by word).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.search import embedded_fts
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.embedded_fts import (
    BM25_QUERY,
    TermCounts,
    _chunks_holding,
    _index_records,
    _index_terms,
    _varint,
    fts_match_expression,
    match_expression,
    query_words,
    ranked_by_bm25,
    row_ranges,
    scope_token,
)
from projections.search.embedded_schema import QUERY_TERM_TABLES
from projections.search.index import IndexedChunk

# Zipf-like: a few words in most chunks, most words in few. Stems collide ("index", "indexes", "indexing").
VOCABULARY = [
    "index", "indexes", "indexing", "query", "queries", "file", "files", "table", "row", "column", "value",
    "returns", "error", "option", "default", "server", "client", "stream", "token", "cache", "page", "write",
] + [f"term{number}" for number in range(400)]
WEIGHTS = [1.0 / (rank + 1) ** 1.1 for rank in range(len(VOCABULARY))]


def chunk_text(generator: random.Random) -> str:
    if generator.random() < 0.03:
        # One common word many times: its score from that word alone comes near the bound (idf x (k1 + 1)).
        return " ".join([generator.choice(VOCABULARY[:22])] * generator.randint(100, 400))
    return " ".join(generator.choices(VOCABULARY, weights=WEIGHTS, k=generator.randint(15, 90)))


def unit(generator: np.random.Generator) -> np.ndarray:
    vector = generator.standard_normal(384).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture(scope="module")
def keyword_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    """2,000 chunks in two workspaces (10% owner-only, repeated passages), a file deleted; a connection to its file."""
    directory: Path = tmp_path_factory.mktemp("keyword") / "search"
    generator, vectors = random.Random(5), np.random.default_rng(5)
    chunks = []
    for number in range(2_000):
        workspace = "ws" if number < 1_500 else "ws2"
        text = chunks[number - 7].text if number % 50 == 49 else chunk_text(generator)  # the same passage again
        owner_only = generator.random() < 0.1
        chunks.append(
            IndexedChunk(
                chunk_id=f"chunk-{number:05d}", file_id=f"file-{number // 20:03d}", org_id="org", workspace_id=workspace,
                owner_id="bob" if owner_only else "alice", acl="owner" if owner_only else "workspace",
                title=f"Manual {number // 20} {generator.choice(VOCABULARY)}", location=f"page {number % 20}",
                ordinal=number % 20, text=text, vector=unit(vectors),
            )
        )

    async def build() -> str:
        index = EmbeddedSearchIndex(directory=directory)
        await index.start()
        try:
            for start in range(0, len(chunks), 500):
                await index.upsert(chunks[start : start + 500])
            await index.delete_file(org_id="org", workspace_id="ws", file_id="file-003")
            return index.generation
        finally:
            await index.close()

    generation = asyncio.run(build())
    connection = sqlite3.connect(directory / generation, isolation_level=None)
    connection.executescript(QUERY_TERM_TABLES)
    try:
        yield connection
    finally:
        connection.close()


def parameters(*, user: str = "alice", workspace: str = "ws", file_ids: str | None = None) -> dict:
    return {"org_id": "org", "workspace_id": workspace, "user_id": user, "file_ids": file_ids}


def queries(count: int, seed: int) -> list[str]:
    generator = random.Random(seed)
    made = []
    for _ in range(count):
        words = generator.choices(VOCABULARY, weights=WEIGHTS, k=generator.randint(1, 4))
        words += generator.sample(VOCABULARY, generator.randint(0, 3))  # rarer words too
        if generator.random() < 0.1:
            words.append("absentword")
        if generator.random() < 0.1:
            words += ["the", "of"]  # stop words: left out
        generator.shuffle(words)
        made.append(" ".join(words))
    return made


def rarest_first(connection: sqlite3.Connection, text: str) -> list[str]:
    """The question's words in the order pruning sends them to FTS5."""
    words = query_words(text)
    terms = _index_terms(connection, words)
    assert terms is not None
    held = _chunks_holding(connection, set(terms))
    return [word for word, term in sorted(zip(words, terms), key=lambda pair: (held.get(pair[1], 0), pair[0]))]


def one_query_over_every_word(connection: sqlite3.Connection, text: str, *, words_in: str, window: int, **scope) -> list:
    """What FTS5 ranks with every word matched: the words in the question's order, or rarest first (as pruning sends them)."""
    words = rarest_first(connection, text) if words_in == "rarity" else query_words(text)
    expression = match_expression(words, scope=scope_token("org", scope.get("workspace", "ws")))
    rows = connection.execute(BM25_QUERY, {**parameters(**scope), "match": expression, "window": window})
    return [(row_id, score) for row_id, score, _, _ in rows]


@pytest.mark.parametrize("window", [10, 50])
@pytest.mark.parametrize(
    ("scope", "pruned_at_least"),
    # In a small workspace a first pass seldom fills the window, and the search goes on to every word. Within
    # named files bm25() scores only their chunks: nothing is pruned.
    [({}, 20), ({"user": "bob"}, 20), ({"workspace": "ws2"}, 5), ({"file_ids": '["file-001", "file-004", "file-010", "file-020"]'}, 0)],
    ids=["workspace", "another-user", "another-workspace", "four-files"],
)
def test_pruned_rankings_are_the_full_query_s_rankings(
    keyword_index: sqlite3.Connection, window: int, scope: dict, pruned_at_least: int
) -> None:
    pruned_searches = 0
    for text in queries(120, seed=window):
        keyword_index.execute("BEGIN")
        ranking = ranked_by_bm25(
            keyword_index, text, scope=scope_token("org", scope.get("workspace", "ws")), parameters=parameters(**scope),
            window=window, first_pass_chunks=150,  # small, for a small index: most searches prune
        )
        same_order = one_query_over_every_word(keyword_index, text, words_in="rarity", window=window, **scope)
        question_order = one_query_over_every_word(keyword_index, text, words_in="question", window=window, **scope)
        keyword_index.execute("COMMIT")
        if ranking.words_matched < ranking.words:  # pruned: the words went to FTS5 rarest first
            assert list(ranking.scores.items()) == same_order, text
        assert list(ranking.scores) == [row_id for row_id, _ in question_order], text
        assert all(abs(ranking.scores[row_id] - score) <= 1e-9 * abs(score) for row_id, score in question_order), text
        pruned_searches += ranking.words_matched < ranking.words
    assert pruned_searches >= pruned_at_least  # the pruned path ran, not only the full query
    if "file_ids" in scope:
        assert pruned_searches == 0


@pytest.fixture
def expressions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The MATCH expressions of each keyword pass, in order, as the searches of a test send them to FTS5."""
    sent: list[str] = []
    bm25 = embedded_fts._bm25

    def recording(connection: sqlite3.Connection, expression: str, *rest):
        sent.append(expression)
        return bm25(connection, expression, *rest)

    monkeypatch.setattr(embedded_fts, "_bm25", recording)
    return sent


def test_a_second_pass_scores_only_the_chunks_the_first_did_not(keyword_index: sqlite3.Connection, expressions: list[str]) -> None:
    """A first pass that did not settle the window is not done again: the second leaves out the chunks holding its
    words, and the two together score each chunk holding one of the words the search ended on, once."""
    second_passes = 0
    for text in queries(120, seed=4):
        expressions.clear()
        keyword_index.execute("BEGIN")
        ranking = ranked_by_bm25(
            keyword_index, text, scope=scope_token("org", "ws"), parameters=parameters(), window=10, first_pass_chunks=150
        )
        passes = [matched_rows(keyword_index, expression) for expression in expressions]
        if len(passes) == 2:
            second_passes += 1
            required = rarest_first(keyword_index, text)[: ranking.words_matched]
            assert not passes[0] & passes[1], text
            assert passes[0] | passes[1] == matched_rows(keyword_index, match_expression(required, scope=scope_token("org", "ws")))
        keyword_index.execute("COMMIT")
        assert len(passes) <= 2, text
    assert second_passes >= 20


def matched_rows(connection: sqlite3.Connection, expression: str) -> set[int]:
    return {row_id for (row_id,) in connection.execute("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?", (expression,))}


def test_a_word_fts5_splits_in_two_is_searched_without_pruning(keyword_index: sqlite3.Connection) -> None:
    # U+19B0 is a letter to Python (one word) and a separator to SQLite 3.40's tokenizer (two tokens).
    text = "index term3 a\u19b0b query"
    assert "a\u19b0b" in query_words(text) and _index_terms(keyword_index, query_words(text)) is None
    keyword_index.execute("BEGIN")
    ranking = ranked_by_bm25(keyword_index, text, scope=scope_token("org", "ws"), parameters=parameters(), window=20)
    expression = fts_match_expression(text, scope=scope_token("org", "ws"))
    expected = [row[:2] for row in keyword_index.execute(BM25_QUERY, {**parameters(), "match": expression, "window": 20})]
    keyword_index.execute("COMMIT")
    assert ranking.words_matched == ranking.words == 4
    assert list(ranking.scores.items()) == expected


def test_a_query_without_words_ranks_nothing(keyword_index: sqlite3.Connection) -> None:
    ranking = ranked_by_bm25(keyword_index, "?! ()", scope=scope_token("org", "ws"), parameters=parameters(), window=10)
    assert ranking.scores == {} and ranking.words == 0


def test_the_row_count_is_the_one_fts5_keeps(keyword_index: sqlite3.Connection) -> None:
    (rows,) = keyword_index.execute("SELECT count(*) FROM chunks_fts").fetchone()
    assert _index_records(keyword_index)[0] == rows == 1_980  # 2,000 less the deleted file's 20


def test_sqlite_varints() -> None:
    assert _varint(bytes([0x05])) == 5
    assert _varint(bytes([0x86, 0x8D, 0x20])) == 100_000
    assert _varint(bytes([0xFF] * 8 + [0x01])) == (2**56 - 1) << 8 | 1  # the ninth byte keeps all 8 bits


def answers_of(monkeypatch: pytest.MonkeyPatch, step: str) -> list[bool]:
    """For each call of `embedded_fts.<step>` (a way of ranking that may decline with None), whether it answered."""
    answers: list[bool] = []
    ranking = getattr(embedded_fts, step)

    def recording(*arguments, **keywords):
        ranked = ranking(*arguments, **keywords)
        answers.append(ranked is not None)
        return ranked

    monkeypatch.setattr(embedded_fts, step, recording)
    return answers


async def connection_to_an_index_of(chunks: list[IndexedChunk], directory: Path) -> sqlite3.Connection:
    """A real index of `chunks` built in `directory`, and a connection to its generation as the index opens them."""
    index = EmbeddedSearchIndex(directory=directory / "search")
    await index.start()
    try:
        await index.upsert(chunks)
        generation = directory / "search" / index.generation
    finally:
        await index.close()
    connection = sqlite3.connect(generation, isolation_level=None)
    connection.executescript(QUERY_TERM_TABLES)
    return connection


async def test_a_chunk_scoring_near_the_common_word_s_bound_is_still_found(tmp_path: Path) -> None:
    """A chunk of one common word said 300 times scores 98% of that word's bound (idf x 2.2), just above the window's
    last chunk holding the rare word: a looser bound than FTS5's own would leave it out."""
    vectors = np.random.default_rng(1)
    texts = [" ".join(["filler"] * 40 + (["common"] if number % 4 == 0 else [])) for number in range(400)]
    texts += [" ".join(["filler"] * 128 + ["rare"]) for _ in range(5)]  # weak: one "rare" in a long chunk
    texts.append(" ".join(["common"] * 300))
    chunks = [
        IndexedChunk(
            chunk_id=f"chunk-{number:03d}", file_id="file", org_id="org", workspace_id="ws", owner_id="alice",
            acl="workspace", title="", location="", ordinal=number, text=text, vector=unit(vectors),
        )
        for number, text in enumerate(texts)
    ]
    connection = await connection_to_an_index_of(chunks, tmp_path)
    try:
        ranking = ranked_by_bm25(
            connection, "rare common", scope=scope_token("org", "ws"), parameters=parameters(), window=5, first_pass_chunks=10
        )
        expected = one_query_over_every_word(connection, "rare common", words_in="rarity", window=5)
        (spam_row,) = connection.execute("SELECT row_id FROM chunks WHERE chunk_id = 'chunk-405'").fetchone()
    finally:
        connection.close()
    assert spam_row in dict(expected)  # the premise: it belongs in the window
    assert list(ranking.scores.items()) == expected
    assert ranking.words_matched == 2  # the first pass (the rare word) was not enough


async def test_a_caller_who_sees_few_of_the_workspace_s_chunks_gets_the_full_query_s_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FTS5 ranks the workspace's best matches before `chunks` says which the caller may see; when most are someone
    else's own chunks, too few are left to tell the window, and the one query that joins every match answers."""
    generator, vectors = random.Random(9), np.random.default_rng(9)
    chunks = [
        IndexedChunk(
            chunk_id=f"chunk-{number:03d}", file_id=f"file-{number // 10:02d}", org_id="org", workspace_id="ws",
            owner_id="bob" if number % 20 else "alice", acl="owner" if number % 20 else "workspace", title="Notes",
            location="", ordinal=number % 10, text=chunk_text(generator), vector=unit(vectors),
        )
        for number in range(400)
    ]
    connection = await connection_to_an_index_of(chunks, tmp_path)
    answers = answers_of(monkeypatch, "_bm25_then_visible")
    try:
        for user in ("alice", "bob"):
            answers.clear()
            for text in queries(40, seed=3):
                ranking = ranked_by_bm25(
                    connection, text, scope=scope_token("org", "ws"), parameters=parameters(user=user), window=10,
                    first_pass_chunks=10_000,  # no pruning: each search is one query over every word
                )
                expected = one_query_over_every_word(connection, text, words_in="rarity", window=10, user=user)
                assert list(ranking.scores.items()) == expected, (user, text)
            # alice sees 1 chunk in 20: her windows come from the full query; bob sees them all: from FTS5's best.
            assert answers.count(False) >= 30 if user == "alice" else all(answers)
    finally:
        connection.close()


@pytest.mark.parametrize("other_workspace", [False, True], ids=["one-workspace", "two-workspaces"])
async def test_the_scope_token_is_required_only_where_another_workspace_holds_chunks(
    tmp_path: Path, expressions: list[str], other_workspace: bool
) -> None:
    """Where every chunk is the workspace's, requiring its token filters nothing (and has FTS5 count its postings for
    bm25()'s idf): the search leaves it out and ranks exactly as the scoped query does. One chunk elsewhere puts it back."""
    generator, vectors = random.Random(11), np.random.default_rng(11)
    chunks = [
        IndexedChunk(
            chunk_id=f"chunk-{number:03d}", file_id=f"file-{number // 10:02d}", org_id="org", workspace_id="ws",
            owner_id="alice", acl="workspace", title="Notes", location="", ordinal=number % 10,
            text=chunk_text(generator), vector=unit(vectors),
        )
        for number in range(300)
    ]
    if other_workspace:
        chunks.append(replace(chunks[0], chunk_id="elsewhere", workspace_id="ws-other"))
    connection = await connection_to_an_index_of(chunks, tmp_path)
    scope = scope_token("org", "ws")
    try:
        for text in queries(40, seed=6):
            ranking = ranked_by_bm25(connection, text, scope=scope, parameters=parameters(), window=10, first_pass_chunks=60)
            assert list(ranking.scores.items()) == one_query_over_every_word(connection, text, words_in="rarity", window=10)
    finally:
        connection.close()
    required = [expression.startswith(f'scope_token : "{scope}" AND ') for expression in expressions]
    assert all(required) if other_workspace else not any(required)


# Small corpora of ten words, common ones in most chunks and rare ones in few (so first passes leave words out), with
# chunks of one word said many times, empty chunks, titles that hold the query's words, stems shared by two words,
# chunks in another workspace and chunks only their owner may see.
_WORDS = ["index", "indexes", "query", "value", "error", "token", "cache", "rare", "page", "stream"]
_SKEWED = [word for rank, word in enumerate(_WORDS) for _ in range(len(_WORDS) - rank)]  # "index" 10 times, "stream" once
_CHUNK_TEXTS = st.one_of(
    st.lists(st.sampled_from(_SKEWED), max_size=12).map(" ".join),
    st.tuples(st.sampled_from(_WORDS), st.integers(20, 300)).map(lambda said: " ".join([said[0]] * said[1])),
)
_CHUNKS = st.lists(
    st.tuples(_CHUNK_TEXTS, st.sampled_from(["", *_WORDS]), st.integers(0, 14)),
    min_size=40, max_size=100,
)
_QUERIES = st.lists(st.lists(st.sampled_from([*_WORDS, "absent"]), min_size=1, max_size=6).map(" ".join), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=_CHUNKS, texts=_QUERIES, window=st.integers(1, 12), first_pass_chunks=st.integers(1, 25),
    user=st.sampled_from(["alice", "bob"]),
)
def test_any_small_corpus_ranks_as_the_full_query_with_counts_kept_across_its_searches(
    chunks: list[tuple[str, str, int]], texts: list[str], window: int, first_pass_chunks: int, user: str
) -> None:
    """Whatever the corpus, query, window and first-pass budget, the passes rank as the one full query does, with the
    word counts kept from one search to the next. (Shown to fail when the second pass does not exclude the first's
    chunks, or when words go to FTS5 commonest first; a bound 10% too loose it does not find, random corpora seldom
    come near one: `test_a_chunk_scoring_near_the_common_word_s_bound_is_still_found` does.)"""
    vectors = np.random.default_rng(0)
    indexed = [
        IndexedChunk(
            chunk_id=f"chunk-{number:03d}", file_id=f"file-{number // 10}", org_id="org",
            workspace_id="ws2" if kind % 5 == 0 else "ws", owner_id="bob" if kind % 3 == 0 else "alice",
            acl="owner" if kind % 3 == 0 else "workspace", title=title, location="", ordinal=number % 10, text=text,
            vector=unit(vectors),
        )
        for number, (text, title, kind) in enumerate(chunks)  # a chunk's kind: 1 in 5 elsewhere, 1 in 3 bob's own
    ]
    with tempfile.TemporaryDirectory() as directory:
        connection = asyncio.run(connection_to_an_index_of(indexed, Path(directory)))
        counts = TermCounts()
        try:
            for text in texts:
                connection.execute("BEGIN")
                ranking = ranked_by_bm25(
                    connection, text, scope=scope_token("org", "ws"), parameters=parameters(user=user), window=window,
                    first_pass_chunks=first_pass_chunks, term_counts=counts,
                )
                expected = one_query_over_every_word(connection, text, words_in="rarity", window=window, user=user)
                connection.execute("COMMIT")
                assert list(ranking.scores.items()) == expected, text
        finally:
            connection.close()


def test_row_ranges_run_on_across_small_gaps() -> None:
    assert row_ranges([], gap=2) == []
    assert row_ranges([5, 6, 7, 10, 14, 20], gap=2) == [(5, 10), (14, 14), (20, 20)]
    assert row_ranges([5, 6, 7, 10, 14, 20], gap=3) == [(5, 14), (20, 20)]
    assert row_ranges([1, 2, 3], gap=0) == [(1, 3)]


@pytest.mark.parametrize(
    ("gap", "most_ranges", "by_ranges"),
    [(256, 8, True), (0, 1_000, True), (0, 8, False)],
    ids=["a-range-a-file", "a-range-a-chunk", "too-many-ranges"],
)
async def test_a_search_within_named_files_ranks_as_the_joined_query_whatever_their_row_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gap: int, most_ranges: int, by_ranges: bool
) -> None:
    """Twelve files whose chunks interleave (each file's row ids spread over the whole table), other users' own
    chunks among them: ranked one range of row ids at a time or by the joined query, the windows are that query's."""
    generator, vectors = random.Random(13), np.random.default_rng(13)
    chunks = [
        IndexedChunk(
            chunk_id=f"chunk-{number:03d}", file_id=f"file-{number % 12:02d}", org_id="org", workspace_id="ws",
            owner_id="bob" if number % 7 == 0 else "alice", acl="owner" if number % 7 == 0 else "workspace",
            title="Notes", location="", ordinal=number // 12, text=chunk_text(generator), vector=unit(vectors),
        )
        for number in range(480)
    ]
    connection = await connection_to_an_index_of(chunks, tmp_path)
    monkeypatch.setattr(embedded_fts, "ROW_RANGE_GAP", gap)
    monkeypatch.setattr(embedded_fts, "MAX_ROW_RANGES", most_ranges)
    answers = answers_of(monkeypatch, "_bm25_in_row_ranges")
    try:
        for number, text in enumerate(queries(40, seed=8)):
            files = json.dumps(sorted({f"file-{(number + step * 5) % 12:02d}" for step in range(1 + number % 3)}))
            scope = {"file_ids": files, "user": "alice"}
            ranking = ranked_by_bm25(connection, text, scope=scope_token("org", "ws"), parameters=parameters(**scope), window=10)
            assert list(ranking.scores.items()) == one_query_over_every_word(connection, text, words_in="question", window=10, **scope), text
    finally:
        connection.close()
    assert answers and all(answers) if by_ranges else not any(answers)
