"""The conversation, turn and run read models: ClickHouse DDL, idempotent upserts, scoped reads."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, cast

from projections.store import SqlStore

__all__ = [
    "ConversationRow",
    "FileRow",
    "FileStateRow",
    "FileView",
    "ReadModels",
    "RunRow",
    "Scope",
    "TurnRole",
    "TurnRow",
    "TurnState",
]

TurnRole = Literal["user", "assistant"]
TurnState = Literal["completed", "in_progress", "cancelled", "failed"]


@dataclass(frozen=True, kw_only=True)
class Scope:
    """Who is asking: reads answer only rows of this org, this owner and these workspaces."""

    org_id: str
    owner_id: str
    workspace_ids: tuple[str, ...]


# Every row carries `version`: the log offset of the event that produced it. Tables are
# ReplacingMergeTree(version) and reads use FINAL, so the highest offset wins however often
# and in whatever order events are redelivered or replayed.


@dataclass(frozen=True, kw_only=True)
class ConversationRow:
    org_id: str
    workspace_id: str
    owner_id: str
    conversation_id: str
    title: str = ""
    created_at: datetime
    version: int


@dataclass(frozen=True, kw_only=True)
class TurnRow:
    org_id: str
    workspace_id: str
    owner_id: str
    conversation_id: str
    turn_seq: int
    role: TurnRole
    state: TurnState
    content: list[dict[str, Any]]  # [{"type": "text", "text": ...}, ...]
    parent_turn_seq: int | None = None
    run_id: str = ""  # "" for a turn no run produced
    citations: list[dict[str, Any]] = field(default_factory=list)  # what the answer cites
    sources: list[dict[str, Any]] = field(default_factory=list)  # every passage it was given
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # the calls the run made
    reason: str = ""
    created_at: datetime
    finished_at: datetime | None = None
    version: int


@dataclass(frozen=True, kw_only=True)
class RunRow:
    org_id: str
    workspace_id: str
    owner_id: str
    run_id: str
    conversation_id: str
    turn_seq: int
    mode: str
    status: str
    reason: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    created_at: datetime
    finished_at: datetime | None = None
    version: int


@dataclass(frozen=True, kw_only=True)
class FileRow:
    """An uploaded file's header: who may see it and what it is (from `FileUploaded`; never changes)."""

    org_id: str
    workspace_id: str
    owner_id: str
    file_id: str
    acl: str  # workspace | owner
    filename: str
    media_type: str
    size: int
    digest: str
    created_at: datetime
    version: int


@dataclass(frozen=True, kw_only=True)
class FileStateRow:
    """Where a file's ingestion stands; every document event replaces it (`deleted` hides the file)."""

    org_id: str
    file_id: str
    state: str  # pending | extracting | indexing | indexed | failed | deleted
    pages: int = 0
    chunks_total: int = 0
    chunks_indexed: int = 0
    title: str = ""
    failure_reason: str = ""
    version: int


@dataclass(frozen=True, kw_only=True)
class FileView:
    """A visible file: its header and its ingestion state, as the API shows it."""

    org_id: str
    workspace_id: str
    owner_id: str
    file_id: str
    acl: str
    filename: str
    media_type: str
    size: int
    digest: str
    created_at: datetime
    state: str
    pages: int
    chunks_total: int
    chunks_indexed: int
    title: str
    failure_reason: str


_Row = ConversationRow | TurnRow | RunRow | FileRow | FileStateRow


@dataclass(frozen=True, kw_only=True)
class _Table:
    """One read model table: its row type, its columns in that type's field order, its sort key."""

    name: str
    row_type: type[_Row]
    columns: tuple[tuple[str, str], ...]
    order_by: tuple[str, ...]
    json_columns: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # The SQL columns and the dataclass must never drift apart.
        field_names = tuple(row_field.name for row_field in fields(self.row_type))
        if field_names != self.column_names:
            raise TypeError(f"{self.row_type.__name__} fields {field_names} != {self.column_names}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def create_statement(self, table_name: str) -> str:
        column_lines = ",\n    ".join(f"{name} {sql_type}" for name, sql_type in self.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS {table_name} (\n    {column_lines}\n)\n"
            f"ENGINE = ReplacingMergeTree(version)\nORDER BY ({', '.join(self.order_by)})"
        )

    def add_column_statements(self, table_name: str, existing: set[str]) -> list[str]:
        """The columns an older turnlog's table (with `existing` columns) lacks, added in place."""
        statements = []
        for (previous, _), (name, sql_type) in zip(self.columns, self.columns[1:]):
            if name in existing:
                continue
            default = " DEFAULT '[]'" if name in self.json_columns else ""
            statements.append(
                f"ALTER TABLE {table_name} ADD COLUMN IF NOT EXISTS {name} {sql_type}{default} AFTER {previous}"
            )
        return statements


_UTC_MICROS = "DateTime64(6, 'UTC')"
_SCOPE_COLUMNS = (("org_id", "String"), ("workspace_id", "String"), ("owner_id", "String"))

_CONVERSATIONS = _Table(
    name="conversations",
    row_type=ConversationRow,
    columns=(
        *_SCOPE_COLUMNS,
        ("conversation_id", "String"),
        ("title", "String"),
        ("created_at", _UTC_MICROS),
        ("version", "UInt64"),
    ),
    order_by=("org_id", "conversation_id"),
)
_TURNS = _Table(
    name="turns",
    row_type=TurnRow,
    columns=(
        *_SCOPE_COLUMNS,
        ("conversation_id", "String"),
        ("turn_seq", "UInt32"),
        ("role", "LowCardinality(String)"),
        ("state", "LowCardinality(String)"),
        ("content", "String"),
        ("parent_turn_seq", "Nullable(UInt32)"),
        ("run_id", "String"),
        ("citations", "String"),
        ("sources", "String"),
        ("tool_calls", "String"),
        ("reason", "String"),
        ("created_at", _UTC_MICROS),
        ("finished_at", f"Nullable({_UTC_MICROS})"),
        ("version", "UInt64"),
    ),
    order_by=("org_id", "conversation_id", "turn_seq"),
    json_columns=frozenset({"content", "citations", "sources", "tool_calls"}),
)
_RUNS = _Table(
    name="runs",
    row_type=RunRow,
    columns=(
        *_SCOPE_COLUMNS,
        ("run_id", "String"),
        ("conversation_id", "String"),
        ("turn_seq", "UInt32"),
        ("mode", "LowCardinality(String)"),
        ("status", "LowCardinality(String)"),
        ("reason", "String"),
        ("prompt_tokens", "UInt32"),
        ("output_tokens", "UInt32"),
        ("created_at", _UTC_MICROS),
        ("finished_at", f"Nullable({_UTC_MICROS})"),
        ("version", "UInt64"),
    ),
    order_by=("org_id", "run_id"),
)
_FILES = _Table(
    name="files",
    row_type=FileRow,
    columns=(
        *_SCOPE_COLUMNS,
        ("file_id", "String"),
        ("acl", "LowCardinality(String)"),
        ("filename", "String"),
        ("media_type", "LowCardinality(String)"),
        ("size", "UInt64"),
        ("digest", "String"),
        ("created_at", _UTC_MICROS),
        ("version", "UInt64"),
    ),
    order_by=("org_id", "file_id"),
)
# Apart from `files`: state events name only the file, and each event must carry every column of
# the rows it writes. A file's events share its key, so their offsets order them.
_FILE_STATES = _Table(
    name="file_states",
    row_type=FileStateRow,
    columns=(
        ("org_id", "String"),
        ("file_id", "String"),
        ("state", "LowCardinality(String)"),
        ("pages", "UInt32"),
        ("chunks_total", "UInt32"),
        ("chunks_indexed", "UInt32"),
        ("title", "String"),
        ("failure_reason", "String"),
        ("version", "UInt64"),
    ),
    order_by=("org_id", "file_id"),
)
_TABLES = (_CONVERSATIONS, _TURNS, _RUNS, _FILES, _FILE_STATES)

# Files are shared within a workspace unless their ACL says owner: a different rule from
# conversations, which are always their owner's alone.
_FILE_IN_SCOPE = (
    "f.org_id = {org_id:String} AND has({workspace_ids:Array(String)}, f.workspace_id)"
    " AND (f.acl = 'workspace' OR f.owner_id = {owner_id:String})"
)
_FILE_STATE_COLUMNS = ("state", "pages", "chunks_total", "chunks_indexed", "title", "failure_reason")

# Every scoped read starts with this filter. org_id leads each sort key, so it also prunes.
# The scope columns of a row never change, so filtering them is safe together with FINAL.
_IN_SCOPE = (
    "org_id = {org_id:String} AND owner_id = {owner_id:String}"
    " AND has({workspace_ids:Array(String)}, workspace_id)"
)

_TABLE_SUFFIX = re.compile(r"[A-Za-z0-9_]*")


class ReadModels:
    """The read model tables on a SqlStore; a `table_suffix` names a second set for rebuilds."""

    def __init__(self, store: SqlStore, *, table_suffix: str = "") -> None:
        if not _TABLE_SUFFIX.fullmatch(table_suffix):
            raise ValueError(f"table_suffix must be letters, digits and _: {table_suffix!r}")
        self._store = store
        self._table_suffix = table_suffix

    @property
    def store(self) -> SqlStore:
        """The store these tables live in (other projections, like the usage ledger, share it)."""
        return self._store

    def sibling(self, table_suffix: str) -> "ReadModels":
        """Another set of these tables in the same store (a rebuild's fresh tables)."""
        return ReadModels(self._store, table_suffix=table_suffix)

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(self._name(table) for table in _TABLES)

    async def create_tables(self) -> None:
        for table in _TABLES:
            await self._store.execute(table.create_statement(self._name(table)))
        # One look at the catalogue, then an ALTER only where a table made by an older turnlog lacks a column.
        names = [self._name(table) for table in _TABLES]
        rows = await self._store.query(
            "SELECT table, name FROM system.columns WHERE database = currentDatabase() AND table IN {tables:Array(String)}",
            {"tables": names},
        )
        existing: dict[str, set[str]] = {name: set() for name in names}
        for row in rows:
            existing[str(row["table"])].add(str(row["name"]))
        for table, name in zip(_TABLES, names):
            for statement in table.add_column_statements(name, existing[name]):
                await self._store.execute(statement)

    async def drop_tables(self) -> None:
        for table in _TABLES:
            await self._store.execute(f"DROP TABLE IF EXISTS {self._name(table)}")

    async def truncate(self) -> None:
        for table in _TABLES:
            await self._store.execute(f"TRUNCATE TABLE IF EXISTS {self._name(table)}")

    async def owned_files(self, *, org_id: str, owner_id: str | None) -> list[FileRow]:
        """Every file one user (or, with None, anyone) uploaded in an org, deleted ones too: what an erasure removes."""
        owned = "org_id = {org_id:String}" + (" AND owner_id = {owner_id:String}" if owner_id is not None else "")
        rows = await self._store.query(
            f"SELECT {', '.join(_FILES.column_names)} FROM {self._name(_FILES)} FINAL WHERE {owned} ORDER BY file_id",
            {"org_id": org_id, "owner_id": owner_id or ""},
        )
        return [FileRow(**_decoded(_FILES, row)) for row in rows]

    async def erase(self, *, org_id: str, owner_id: str | None, file_ids: Sequence[str] = ()) -> None:
        """Delete every row of one user (`owner_id`) in an org, or of the whole org (None): an erasure.

        Synchronous deletes, so a read after this never sees the rows; rows folded later from the log can only be
        plaintext from before sealing (its sealed events no longer open), and a rebuild skips the sealed ones.
        """
        parameters: dict[str, object] = {"org_id": org_id, "owner_id": owner_id or ""}
        owned = "org_id = {org_id:String}" + (" AND owner_id = {owner_id:String}" if owner_id is not None else "")
        files = self._name(_FILES)
        # The states first: they name only the file, so they are found through the files' rows, and through the
        # erasure's own list (a rebuild folds the files' plaintext progress events, but not their sealed uploads).
        await self._store.execute(
            f"DELETE FROM {self._name(_FILE_STATES)} WHERE org_id = {{org_id:String}}"
            f" AND (file_id IN (SELECT file_id FROM {files} WHERE {owned}) OR has({{file_ids:Array(String)}}, file_id))",
            {**parameters, "file_ids": list(file_ids)},
        )
        for table in (_CONVERSATIONS, _TURNS, _RUNS, _FILES):
            await self._store.execute(f"DELETE FROM {self._name(table)} WHERE {owned}", parameters)

    async def upsert(
        self,
        *,
        conversations: Sequence[ConversationRow] = (),
        turns: Sequence[TurnRow] = (),
        runs: Sequence[RunRow] = (),
        files: Sequence[FileRow] = (),
        file_states: Sequence[FileStateRow] = (),
    ) -> None:
        """Write the rows, one INSERT per table that has any; FINAL reads keep the newest version."""
        tables = ((_CONVERSATIONS, conversations), (_TURNS, turns), (_RUNS, runs), (_FILES, files), (_FILE_STATES, file_states))
        for table, rows in tables:
            if rows:
                await self._store.insert(self._name(table), [_record(table, row) for row in rows])

    async def conversation(self, scope: Scope, conversation_id: str) -> ConversationRow | None:
        rows = await self._select(
            _CONVERSATIONS,
            scope,
            where=["conversation_id = {conversation_id:String}"],
            then="LIMIT 1",
            parameters={"conversation_id": conversation_id},
        )
        return ConversationRow(**rows[0]) if rows else None

    async def latest_turn_seq(self, scope: Scope, conversation_id: str) -> int:
        """The highest turn_seq of the conversation; 0 when it has no turns or is not in scope."""
        # No FINAL: redelivered duplicates share their turn_seq, so max() is the same without it.
        rows = await self._store.query(
            f"SELECT max(turn_seq) AS latest_turn_seq FROM {self._name(_TURNS)}"
            f" WHERE {_IN_SCOPE} AND conversation_id = {{conversation_id:String}}",
            {**_scope_parameters(scope), "conversation_id": conversation_id},
        )
        latest_turn_seq = rows[0]["latest_turn_seq"]
        assert isinstance(latest_turn_seq, int)
        return latest_turn_seq

    async def conversations(
        self,
        scope: Scope,
        *,
        workspace_id: str | None = None,
        before: str | None = None,
        limit: int,
    ) -> list[ConversationRow]:
        """Newest first; `before` is the last conversation_id of the previous page."""
        where: list[str] = []
        parameters: dict[str, object] = {"limit": limit}
        if workspace_id is not None:
            where.append("workspace_id = {workspace_id:String}")
            parameters["workspace_id"] = workspace_id
        if before is not None:
            where.append("conversation_id < {before:String}")
            parameters["before"] = before
        rows = await self._select(
            _CONVERSATIONS,
            scope,
            where=where,
            # Conversation ids are prefixed ULIDs, so id order is creation order.
            then="ORDER BY conversation_id DESC LIMIT {limit:UInt32}",
            parameters=parameters,
        )
        return [ConversationRow(**row) for row in rows]

    async def conversation_count(self, scope: Scope, *, workspace_id: str | None = None) -> int:
        """How many conversations `conversations()` would page through (an export's progress counts them)."""
        where = ""
        parameters: dict[str, object] = dict(_scope_parameters(scope))
        if workspace_id is not None:
            where = " AND workspace_id = {workspace_id:String}"
            parameters["workspace_id"] = workspace_id
        # uniqExact, not FINAL: redelivered rows of a conversation share its id.
        rows = await self._store.query(
            f"SELECT uniqExact(conversation_id) AS conversations FROM {self._name(_CONVERSATIONS)} WHERE {_IN_SCOPE}{where}",
            parameters,
        )
        count = rows[0]["conversations"]
        assert isinstance(count, int)
        return count

    async def turns(
        self, scope: Scope, conversation_id: str, *, after_seq: int = 0, limit: int
    ) -> list[TurnRow]:
        """Turns with turn_seq > after_seq, ascending."""
        rows = await self._select(
            _TURNS,
            scope,
            where=["conversation_id = {conversation_id:String}", "turn_seq > {after_seq:UInt32}"],
            then="ORDER BY turn_seq LIMIT {limit:UInt32}",
            parameters={"conversation_id": conversation_id, "after_seq": after_seq, "limit": limit},
        )
        return [TurnRow(**_decoded(_TURNS, row)) for row in rows]

    async def run(self, scope: Scope, run_id: str) -> RunRow | None:
        rows = await self._select(
            _RUNS, scope, where=["run_id = {run_id:String}"], then="LIMIT 1", parameters={"run_id": run_id}
        )
        return RunRow(**rows[0]) if rows else None

    async def runs_by_id(self, scope: Scope, run_ids: Sequence[str]) -> dict[str, RunRow]:
        """Those of `run_ids` in the scope, by id (one query for a page of turns' runs)."""
        if not run_ids:
            return {}
        rows = await self._select(
            _RUNS, scope, where=["has({run_ids:Array(String)}, run_id)"], then="", parameters={"run_ids": list(run_ids)}
        )
        return {run.run_id: run for run in (RunRow(**row) for row in rows)}

    async def file(self, scope: Scope, file_id: str) -> FileView | None:
        """A file the scope may see (its workspace, and its owner unless shared), not deleted."""
        views = await self._select_files(scope, where=["f.file_id = {file_id:String}"], then="LIMIT 1", parameters={"file_id": file_id})
        return views[0] if views else None

    async def files(
        self, scope: Scope, *, workspace_id: str | None = None, before: str | None = None, limit: int, owned: bool = False
    ) -> list[FileView]:
        """Visible files, newest first; `before` is the last file_id of the previous page; `owned`: only the scope's owner's uploads."""
        where: list[str] = []
        parameters: dict[str, object] = {"limit": limit}
        if owned:
            where.append("f.owner_id = {owner_id:String}")
        if workspace_id is not None:
            where.append("f.workspace_id = {workspace_id:String}")
            parameters["workspace_id"] = workspace_id
        if before is not None:
            where.append("f.file_id < {before:String}")
            parameters["before"] = before
        # File ids are prefixed ULIDs, so id order is upload order.
        return await self._select_files(scope, where=where, then="ORDER BY f.file_id DESC LIMIT {limit:UInt32}", parameters=parameters)

    async def files_by_id(self, scope: Scope, file_ids: Sequence[str]) -> dict[str, FileView]:
        """Those of `file_ids` the scope may see, by id (the rest are missing, deleted or someone else's)."""
        if not file_ids:
            return {}
        views = await self._select_files(
            scope, where=["has({file_ids:Array(String)}, f.file_id)"], then="", parameters={"file_ids": list(file_ids)}
        )
        return {view.file_id: view for view in views}

    async def _select_files(
        self, scope: Scope, *, where: Sequence[str], then: str, parameters: Mapping[str, object]
    ) -> list[FileView]:
        header = ", ".join(f"f.{name}" for name in _FILES.column_names if name != "version")
        state = ", ".join(f"s.{name}" for name in _FILE_STATE_COLUMNS)
        conditions = " AND ".join([_FILE_IN_SCOPE, "s.state != 'deleted'", *where])
        rows = await self._store.query(
            f"SELECT {header}, {state} FROM {self._name(_FILES)} AS f FINAL"
            f" INNER JOIN (SELECT org_id, file_id, {', '.join(_FILE_STATE_COLUMNS)}"
            f" FROM {self._name(_FILE_STATES)} FINAL WHERE org_id = {{org_id:String}}) AS s"
            f" ON s.org_id = f.org_id AND s.file_id = f.file_id"
            f" WHERE {conditions} {then}",
            {**_scope_parameters(scope), **parameters},
        )
        return [FileView(**{name.removeprefix("f.").removeprefix("s."): value for name, value in row.items()}) for row in rows]

    async def snapshot(self) -> dict[str, list[dict[str, object]]]:
        """Every row of every table as stored (FINAL, sort-key order, without `version`).

        Keyed by the table's base name, so a rebuild's snapshot compares equal to the live one.
        """
        snapshot: dict[str, list[dict[str, object]]] = {}
        for table in _TABLES:
            columns = ", ".join(name for name in table.column_names if name != "version")
            snapshot[table.name] = await self._store.query(
                f"SELECT {columns} FROM {self._name(table)} FINAL ORDER BY {', '.join(table.order_by)}"
            )
        return snapshot

    async def exchange_with(self, other: ReadModels) -> None:
        """Swap every table with `other`'s under the same base name (blue/green rebuild).

        One EXCHANGE statement: each pair swaps atomically; a reader that resolves the
        three names in the middle of the statement may see one swapped and one not.
        """
        if other._table_suffix == self._table_suffix:
            raise ValueError("cannot exchange a set of tables with itself")
        pairs = ", ".join(f"{self._name(table)} AND {other._name(table)}" for table in _TABLES)
        await self._store.execute(f"EXCHANGE TABLES {pairs}")

    def _name(self, table: _Table) -> str:
        return f"{table.name}{self._table_suffix}"

    async def _select(
        self,
        table: _Table,
        scope: Scope,
        *,
        where: Sequence[str],
        then: str,
        parameters: Mapping[str, object],
    ) -> list[dict[str, object]]:
        # The scope filter leads every read; callers can only narrow it further.
        conditions = " AND ".join([_IN_SCOPE, *where])
        return await self._store.query(
            f"SELECT {', '.join(table.column_names)} FROM {self._name(table)} FINAL"
            f" WHERE {conditions} {then}",
            {**_scope_parameters(scope), **parameters},
        )


def _scope_parameters(scope: Scope) -> dict[str, object]:
    return {
        "org_id": scope.org_id,
        "owner_id": scope.owner_id,
        "workspace_ids": list(scope.workspace_ids),
    }


def _record(table: _Table, row: _Row) -> dict[str, object]:
    record = {name: getattr(row, name) for name in table.column_names}
    for name in table.json_columns:
        record[name] = json.dumps(record[name], ensure_ascii=False, separators=(",", ":"))
    return record


def _decoded(table: _Table, row: dict[str, object]) -> dict[str, Any]:
    for name in table.json_columns:
        row[name] = json.loads(cast(str, row[name]))
    return row
