"""The embedded index's SQLite tables (one set per generation) and the statements it runs on them."""

from __future__ import annotations

__all__ = [
    "ACCESS_COLUMNS",
    "BUMP_VERSION",
    "CHUNK_COLUMNS",
    "FETCH_QUERY",
    "FTS_TOKENIZER",
    "INSERT_CHUNK",
    "IN_SCOPE",
    "OTHER_WORKSPACES_HOLD_CHUNKS",
    "QUERY_TERM_TABLES",
    "SCHEMA",
    "STORED_CHUNK",
    "VISIBLE_QUERY",
]

ACCESS_COLUMNS = ("chunk_id", "file_id", "org_id", "workspace_id", "owner_id", "acl", "ordinal")
_TEXT_COLUMNS = ("title", "location", "text")
CHUNK_COLUMNS = (*ACCESS_COLUMNS, *_TEXT_COLUMNS)

# How FTS5 splits and stems the chunks' text, and the query's words when their index terms are looked up.
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"

# Three tables per chunk, joined by row_id: `chunks` stays narrow (ids and access columns) so the
# scope filter, run on every BM25 candidate, reads few pages; `chunk_texts` is the FTS5 index's
# content; `chunk_vectors` holds the embeddings. A chunk's rows are never updated in place: an
# upsert that changes a chunk deletes it and inserts it under a new row id, so the vector cache can
# catch up by reading only rows above the highest id it holds (and the ids that are gone).
SCHEMA = f"""
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
    tokenize='{FTS_TOKENIZER}'
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

# Each connection's own (temporary) tables for the keyword search's pruning (`embedded_fts.py`): the query's
# words tokenized by FTS5 itself, one row of `query_text` at a time, and how many chunks hold an index term,
# per column.
QUERY_TERM_TABLES = f"""
CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_text USING fts5(text, tokenize='{FTS_TOKENIZER}');
CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_terms USING fts5vocab(temp, query_text, instance);
CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunk_terms USING fts5vocab(main, chunks_fts, col);
"""

# The scope filter, on `chunks` aliased `c`. Parameters: org, workspace, user, file ids (a JSON
# array, or NULL for the whole workspace). The scope (org, workspace, ACL, files) runs inside both
# ranked queries: here in the FTS query's WHERE clause (and, for org and workspace, inside the
# MATCH expression itself), and as the mask that picks the vector candidates before they are
# ranked (`embedded_vectors.py`).
IN_SCOPE = """
    c.org_id = :org_id AND c.workspace_id = :workspace_id
    AND (c.acl = 'workspace' OR c.owner_id = :user_id)
    AND (:file_ids IS NULL OR c.file_id IN (SELECT value FROM json_each(:file_ids)))
"""

# Chunks by a JSON list of row ids. CROSS JOIN fixes the order: look each row id up, rather than walk
# the workspace's chunks by the (org, workspace) index and test each against the list (100k chunks:
# 66 ms instead of < 1 ms).
_LISTED_CHUNKS = "FROM json_each(:row_ids) AS wanted CROSS JOIN chunks AS c ON c.row_id = wanted.value"

# The final read applies the scope again: the hits cannot leave it even if a ranking step erred.
FETCH_QUERY = f"""
SELECT c.row_id, {", ".join(f"c.{column}" for column in ACCESS_COLUMNS)}, {", ".join(f"t.{column}" for column in _TEXT_COLUMNS)}
{_LISTED_CHUNKS} JOIN chunk_texts AS t ON t.row_id = c.row_id
WHERE {IN_SCOPE}
"""

# Whether the index holds a chunk of any workspace but this one: four seeks in `chunks_by_file`, whatever its size.
OTHER_WORKSPACES_HOLD_CHUNKS = """
SELECT EXISTS (SELECT 1 FROM chunks WHERE org_id < :org_id)
    OR EXISTS (SELECT 1 FROM chunks WHERE org_id > :org_id)
    OR EXISTS (SELECT 1 FROM chunks WHERE org_id = :org_id AND workspace_id < :workspace_id)
    OR EXISTS (SELECT 1 FROM chunks WHERE org_id = :org_id AND workspace_id > :workspace_id)
"""

# Which of FTS5's best matches the caller may see, with the keys ties are cut by (`embedded_fts`).
VISIBLE_QUERY = f"""
SELECT c.row_id, c.file_id, c.ordinal
{_LISTED_CHUNKS}
WHERE {IN_SCOPE}
"""

STORED_CHUNK = f"""
SELECT c.row_id, {", ".join(f"c.{column}" for column in ACCESS_COLUMNS)}, {", ".join(f"t.{column}" for column in _TEXT_COLUMNS)}, v.vector
FROM chunks AS c JOIN chunk_texts AS t ON t.row_id = c.row_id JOIN chunk_vectors AS v ON v.row_id = c.row_id
WHERE c.chunk_id = ?
"""

INSERT_CHUNK = f"INSERT INTO chunks ({', '.join(ACCESS_COLUMNS)}) VALUES ({', '.join('?' for _ in ACCESS_COLUMNS)})"

BUMP_VERSION = """
INSERT INTO workspace_versions (org_id, workspace_id, version) VALUES (?, ?, 1)
ON CONFLICT (org_id, workspace_id) DO UPDATE SET version = version + 1
"""
