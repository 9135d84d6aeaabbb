"""The embedded index's keyword side: user text as a safe FTS5 MATCH expression, ranked by BM25 within the scope."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from projections.search.embedded_schema import IN_SCOPE, OTHER_WORKSPACES_HOLD_CHUNKS, VISIBLE_QUERY
from projections.search.maxscore import first_pass_words, idf_ceiling, word_bound, words_needed
from projections.search.queries import ENGLISH_STOP_WORDS, QUERY_STOP_WORDS, keyword_words

__all__ = [
    "BM25_QUERY",
    "ENGLISH_STOP_WORDS",
    "FIRST_PASS_CHUNKS",
    "MAX_QUERY_WORDS",
    "MAX_ROW_RANGES",
    "ROW_RANGE_GAP",
    "KeywordRanking",
    "TermCounts",
    "fts_match_expression",
    "match_expression",
    "query_words",
    "ranked_by_bm25",
    "row_ranges",
    "scope_token",
]

# Words of the query that reach FTS5; the rest of a pasted page adds cost, not recall.
MAX_QUERY_WORDS = 64

# Column weights for bm25(): title, location, text, scope_token. The title repeats on every chunk
# of a file, so it counts half; the scope token only prunes and must not score.
_BM25 = "bm25(chunks_fts, 0.5, 1.0, 1.0, 0.0)"


def _bm25_query(*, rows: str = "") -> str:
    # Ties (the same passage on several pages) are cut at the window by file and position, not by row
    # id, so a rebuild keeps the same candidates; the caller orders ties fully (`ordering.py`).
    return f"""
SELECT c.row_id, {_BM25} AS score, c.file_id, c.ordinal
FROM chunks_fts JOIN chunks AS c ON c.row_id = chunks_fts.rowid
WHERE chunks_fts MATCH :match {rows} AND {IN_SCOPE}
ORDER BY score, c.file_id, c.ordinal
LIMIT :window
"""


BM25_QUERY = _bm25_query()

# Within named files, one range of their row ids at a time: FTS5 takes a rowid range beside MATCH and walks only
# that stretch of each word's postings, where `BM25_QUERY` walks every match in the index and drops those outside
# the files (100k chunks, three files: p50 21 -> 8 ms). bm25()'s statistics are the whole index's whatever the
# range, so a chunk scores as it does there. A file's chunks are written together, so its row ids mostly run on.
_BM25_IN_ROWS = _bm25_query(rows="AND chunks_fts.rowid BETWEEN :first_row AND :last_row")
_FILES_ROWS = """
SELECT row_id FROM chunks
WHERE org_id = :org_id AND workspace_id = :workspace_id AND file_id IN (SELECT value FROM json_each(:file_ids))
ORDER BY row_id
"""
# Ranges run on across this many row ids of other chunks (read and dropped by the scope filter); files in more
# ranges than the most are ranked by `BM25_QUERY` at once (each range costs bm25() its idf walks again).
ROW_RANGE_GAP = 256
MAX_ROW_RANGES = 8

# The same ranking in two steps, for a whole workspace (the scope token in the MATCH already keeps to it): FTS5
# alone ranks its best matches, and only those are looked up in `chunks` for the ACL and the tie-break, instead
# of every match (tens of thousands at 100k chunks: 10-20% of the query's time).
_BEST_MATCHES = f"""
SELECT rowid, {_BM25} AS score FROM chunks_fts WHERE chunks_fts MATCH :match ORDER BY score LIMIT :limit
"""

# Stop words (`queries.ENGLISH_STOP_WORDS`, Elasticsearch's `_english_` set) are dropped from queries only: they
# match nearly every chunk, cost most of the BM25 time and add almost nothing to the ranking. A query made only
# of them is searched as it is.


def scope_token(org_id: str, workspace_id: str) -> str:
    """One FTS token naming a workspace, so MATCH itself walks only that workspace's postings.

    Hex between a letter and a digit: the unicode61 tokenizer keeps it whole, and no Porter rule
    (all suffix rules on letters) rewrites a token that ends in a digit.
    """
    digest = hashlib.blake2b(json.dumps([org_id, workspace_id]).encode(), digest_size=16).hexdigest()
    return f"w{digest}0"


def query_words(text: str) -> list[str]:
    """The words of plain user text the keyword search matches: stop words left out unless nothing else is left."""
    return keyword_words(text, stop_words=QUERY_STOP_WORDS)[:MAX_QUERY_WORDS]


def fts_match_expression(text: str, *, scope: str) -> str | None:
    """An FTS5 MATCH expression for plain user text: any of its words, within the scope token.

    User text is never FTS5 syntax: each word (letters and digits only) becomes a quoted string,
    so `NEAR`, `AND`, `*`, `-`, `^`, `:`, quotes and parentheses are words or nothing. Stop words
    are left out unless nothing else is left. None when the text has no words.
    """
    words = query_words(text)
    return match_expression(words, scope=scope) if words else None


def match_expression(
    required: Sequence[str],
    *,
    scope: str,
    optional: Sequence[str] = (),
    excluded: Sequence[str] = (),
    require_scope: bool = True,
) -> str:
    """Chunks in the scope that hold any `required` word and no `excluded` one; `optional` words count in bm25()
    wherever they occur.

    The optional words sit beside the scope token, which every chunk of the scope holds, so they match
    nothing new; the scope token's column weighs 0, so it adds nothing to a score (not even rounding:
    FTS5 adds an exact 0.0), and a chunk scores what it would if every word were required. An excluded
    word is in no chunk that matches, so it adds an exact 0.0 too. `require_scope=False` leaves the scope
    token out of the filter, for an index whose every chunk holds it (it would filter nothing).
    """
    held = f"{{title location text}} : ({_any_of(required)})"
    if excluded:
        held = f"({held} NOT {{title location text}} : ({_any_of(excluded)}))"
    expression = f'scope_token : "{scope}" AND {held}' if require_scope else held
    if optional:
        expression += f' AND (scope_token : "{scope}" OR {{title location text}} : ({_any_of(optional)}))'
    return expression


def _any_of(words: Sequence[str]) -> str:
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in words)


# -- ranking -----------------------------------------------------------------------------------

# A first pass matches the rarest words while the chunks that hold them (in the whole index) stay within
# this many. On 100k chunks 1,000 to 10,000 were tried; 5,000 gave the lowest median (docs/search.md).
FIRST_PASS_CHUNKS = 5_000


@dataclass(frozen=True)
class KeywordRanking:
    """The best chunks by BM25 (row id -> FTS5's score, lower is better) and how many words the search matched."""

    scores: dict[int, float]
    words: int
    words_matched: int  # the rarest words a chunk had to hold to be scored; `words` where nothing was left out


# A ranked chunk as the window orders it: FTS5's score (lower is better), then file and position, then row id.
_Ranked = tuple[float, str, int, int]


def ranked_by_bm25(
    connection: sqlite3.Connection,
    text: str,
    *,
    scope: str,
    parameters: Mapping[str, Any],
    window: int,
    first_pass_chunks: int = FIRST_PASS_CHUNKS,
    term_counts: TermCounts | None = None,
) -> KeywordRanking:
    """The `window` best chunks in the scope by FTS5's bm25(), exactly as one query over every word ranks them.

    FTS5 scores every chunk that holds any query word: at 100k chunks a question's common words match
    tens of thousands. Here a pass scores only the chunks holding one of the rarest words (all words still
    count in their scores), and a second pass with more words runs only if the common words left out could
    lift another chunk to the window's last score (`maxscore.py`); it scores only the chunks the first did
    not (those without its words), and the window is the best of both. The words go to FTS5 rarest first in
    every pass, so each chunk's score is summed in the same order, bit for bit. Runs inside the caller's
    transaction (one snapshot); `term_counts` keeps the words' chunk counts between searches of one index.
    """
    words = query_words(text)
    if not words:
        return KeywordRanking(scores={}, words=0, words_matched=0)
    # Where every chunk is the workspace's, requiring its token filters nothing, yet bm25() would have FTS5 walk the
    # token's postings (every chunk) to count them for its idf: ~3 ms a pass at 100k chunks.
    require_scope = connection.execute(OTHER_WORKSPACES_HOLD_CHUNKS, parameters).fetchone()[0] == 1
    # Nothing to prune: one word, or named files (there FTS5 ranks only their rows' ranges: `_bm25_in_row_ranges`).
    terms = None if len(words) < 2 or parameters["file_ids"] is not None else _index_terms(connection, words)
    if terms is None:  # or a word FTS5 reads as several tokens, or none: no bound for it
        ranked = _bm25(connection, match_expression(words, scope=scope, require_scope=require_scope), parameters, window)
        return KeywordRanking(_scores(ranked), len(words), len(words))
    rows, contents = _index_records(connection)
    docs = (term_counts or TermCounts()).chunks_holding(connection, set(terms), contents=contents)
    by_rarity = sorted(zip(words, terms, strict=True), key=lambda pair: (docs.get(pair[1], 0), pair[0]))
    ordered = [word for word, _ in by_rarity]
    bounds = [word_bound(idf_ceiling(rows=rows, docs_at_least=docs.get(term, 0))) for _, term in by_rarity]
    scored, matched = 0, first_pass_words([docs.get(term, 0) for _, term in by_rarity], budget=first_pass_chunks)
    ranked: list[_Ranked] = []
    while True:
        expression = match_expression(
            ordered[scored:matched], optional=ordered[matched:], excluded=ordered[:scored], scope=scope,
            require_scope=require_scope,
        )
        ranked = sorted(ranked + _bm25(connection, expression, parameters, window))[:window]
        threshold = -ranked[-1][0] if len(ranked) >= window else None
        needed = words_needed(bounds, threshold)
        if needed <= matched:
            return KeywordRanking(scores=_scores(ranked), words=len(words), words_matched=matched)
        scored, matched = matched, needed


def _scores(ranked: Sequence[_Ranked]) -> dict[int, float]:
    return {row_id: score for score, _, _, row_id in ranked}


def _bm25(connection: sqlite3.Connection, expression: str, parameters: Mapping[str, Any], window: int) -> list[_Ranked]:
    """The window of the chunks `expression` matches that the caller may see, best first."""
    if parameters["file_ids"] is None:
        ranked = _bm25_then_visible(connection, expression, parameters, window)
    else:
        ranked = _bm25_in_row_ranges(connection, expression, parameters, window)
    if ranked is not None:
        return ranked
    rows = connection.execute(BM25_QUERY, {**parameters, "match": expression, "window": window})
    return [(score, file_id, ordinal, row_id) for row_id, score, file_id, ordinal in rows]


def _bm25_in_row_ranges(
    connection: sqlite3.Connection, expression: str, parameters: Mapping[str, Any], window: int
) -> list[_Ranked] | None:
    """`BM25_QUERY`'s answer within the named files, one range of their row ids at a time; None if too many ranges.

    The window is within the union of each range's own window, ordered as `BM25_QUERY` orders it.
    """
    ranges = row_ranges([row_id for (row_id,) in connection.execute(_FILES_ROWS, parameters)], gap=ROW_RANGE_GAP)
    if len(ranges) > MAX_ROW_RANGES:
        return None
    ranked: list[_Ranked] = []
    for first_row, last_row in ranges:
        rows = connection.execute(
            _BM25_IN_ROWS,
            {**parameters, "match": expression, "window": window, "first_row": first_row, "last_row": last_row},
        )
        ranked += [(score, file_id, ordinal, row_id) for row_id, score, file_id, ordinal in rows]
    return sorted(ranked)[:window]


def row_ranges(row_ids: Sequence[int], *, gap: int) -> list[tuple[int, int]]:
    """Ascending row ids as (first, last) ranges; a range runs on across at most `gap` ids it does not hold."""
    ranges: list[tuple[int, int]] = []
    for row_id in row_ids:
        if ranges and row_id - ranges[-1][1] <= gap + 1:
            ranges[-1] = (ranges[-1][0], row_id)
        else:
            ranges.append((row_id, row_id))
    return ranges


def _bm25_then_visible(
    connection: sqlite3.Connection, expression: str, parameters: Mapping[str, Any], window: int
) -> list[_Ranked] | None:
    """`BM25_QUERY`'s answer from FTS5's best `2 x window + 16` matches of the workspace; None if they cannot tell it.

    Every match scoring below the last one fetched is among them, so when `window` of those are visible to the
    caller, the window is theirs: the same chunks, ties cut by file and position as `BM25_QUERY` cuts them. A
    caller who sees few of the workspace's chunks (most are others' own) may not find enough: then None.
    """
    limit = 2 * window + 16
    best = connection.execute(_BEST_MATCHES, {"match": expression, "limit": limit}).fetchall()
    scores = dict(best)
    visible = connection.execute(VISIBLE_QUERY, {**parameters, "row_ids": json.dumps(list(scores))}).fetchall()
    ranked = sorted((scores[row_id], file_id, ordinal, row_id) for row_id, file_id, ordinal in visible)
    if len(best) == limit:  # more matches may follow, at the last score or above: only those below it are sure
        ranked = [entry for entry in ranked if entry[0] < best[-1][1]]
        if len(ranked) < window:
            return None
    return ranked[:window]


def _index_terms(connection: sqlite3.Connection, words: Sequence[str]) -> list[str] | None:
    """Each word as FTS5's tokenizer indexes it (stemmed), read back from a one-row table of this connection."""
    connection.execute("DELETE FROM temp.query_text")
    connection.execute("INSERT INTO temp.query_text (rowid, text) VALUES (1, ?)", (" ".join(words),))
    tokens = connection.execute("SELECT offset, term FROM temp.query_terms ORDER BY offset").fetchall()
    if [offset for offset, _ in tokens] != list(range(len(words))):
        return None
    return [term for _, term in tokens]


def _chunks_holding(connection: sqlite3.Connection, terms: set[str]) -> dict[str, int]:
    """For each term, at least how many chunks hold it: the most in any one searched column (a lower bound)."""
    placeholders = ", ".join("?" for _ in terms)
    return dict(
        connection.execute(
            f"SELECT term, max(doc) FROM temp.chunk_terms WHERE term IN ({placeholders})"
            " AND col IN ('title', 'location', 'text') GROUP BY term",
            sorted(terms),
        ).fetchall()
    )


class TermCounts:
    """How many chunks hold each index term, remembered while the FTS5 index holds what it held when counted.

    fts5vocab counts a term by walking its whole postings list (milliseconds for a common word at 100k chunks,
    a tenth of a keyword search), and a term's count changes only when the index does. Every write to FTS5
    writes its averages record (the row and token totals) and, flushing a new segment, its structure record
    (the segments and a write counter), so the two records as the caller's snapshot reads them name what was
    counted: a write by any connection or process changes them, and the counts kept are dropped. Shared by the
    threads searching one generation's file.
    """

    def __init__(self, *, max_terms: int = 50_000) -> None:
        self._lock = threading.Lock()
        self._contents: tuple[bytes | None, ...] | None = None
        self._counts: dict[str, int] = {}
        self._max_terms = max_terms

    def chunks_holding(
        self, connection: sqlite3.Connection, terms: set[str], *, contents: tuple[bytes | None, ...]
    ) -> dict[str, int]:
        """`_chunks_holding`'s answer (0 for a term no chunk holds), counting only the terms not yet counted."""
        with self._lock:
            kept = self._counts if contents == self._contents else {}
            known = {term: kept[term] for term in terms if term in kept}
        missing = terms - known.keys()
        if not missing:
            return known
        counted = _chunks_holding(connection, missing)
        counted = {term: counted.get(term, 0) for term in missing}
        with self._lock:
            if contents != self._contents or len(self._counts) + len(counted) > self._max_terms:
                self._contents, self._counts = contents, {}
            self._counts.update(counted)
        return known | counted


def _index_records(connection: sqlite3.Connection) -> tuple[int, tuple[bytes | None, ...]]:
    """The row count bm25() uses (the first varint of FTS5's averages record: its file format, stable as SQLite's),
    and FTS5's averages and structure records themselves: what the index holds, as a key."""
    records = dict(connection.execute("SELECT id, block FROM chunks_fts_data WHERE id IN (1, 10)").fetchall())
    averages = records.get(1)
    return (_varint(averages) if averages else 0), (averages, records.get(10))


def _varint(data: bytes) -> int:
    """SQLite's variable-length integer: 7 bits a byte, high bit set while more follow; a ninth byte gives all 8."""
    value = 0
    for position, byte in enumerate(data[:9]):
        if position == 8:
            return (value << 8) | byte
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value
    return value
