"""The embedded index's keyword side: user text as a safe FTS5 MATCH expression, ranked by BM25 within the scope."""

from __future__ import annotations

import hashlib
import json

from projections.search.embedded_schema import IN_SCOPE
from projections.search.queries import ENGLISH_STOP_WORDS, QUERY_STOP_WORDS, keyword_words

__all__ = ["BM25_QUERY", "ENGLISH_STOP_WORDS", "MAX_QUERY_WORDS", "fts_match_expression", "scope_token"]

# Words of the query that reach FTS5; the rest of a pasted page adds cost, not recall.
MAX_QUERY_WORDS = 64

# Column weights for bm25(): title, location, text, scope_token. The title repeats on every chunk
# of a file, so it counts half; the scope token only prunes and must not score.
_BM25 = "bm25(chunks_fts, 0.5, 1.0, 1.0, 0.0)"

# Ties (the same passage on several pages) are cut at the window by file and position, not by row
# id, so a rebuild keeps the same candidates; the caller orders ties fully (`ordering.py`).
BM25_QUERY = f"""
SELECT c.row_id, {_BM25} AS score
FROM chunks_fts JOIN chunks AS c ON c.row_id = chunks_fts.rowid
WHERE chunks_fts MATCH :match AND {IN_SCOPE}
ORDER BY score, c.file_id, c.ordinal
LIMIT :window
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
