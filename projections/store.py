"""The SqlStore port: one ClickHouse-SQL engine, driven with the same SQL in-process or on a server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from kernel.errors import Unavailable

__all__ = ["SqlError", "SqlStore", "StoreUnavailable"]

# What a reader is asked to wait when the store cannot be reached: a restart, or a network blip.
STORE_RETRY_AFTER_S = 5


class SqlError(RuntimeError):
    """The engine refused a statement (syntax, unknown table, bad parameter value, ...).

    Adapters translate their engine's own exception into this one so callers and the
    contract suite never import an engine module; the engine's message is kept as text.
    """


class StoreUnavailable(SqlError, Unavailable):
    """The engine could not be reached (connection refused, timed out, dropped): nothing is wrong with the statement.

    The API answers 503 with Retry-After; a projection retries the batch instead of dead-lettering it.
    """

    def __init__(self, message: str) -> None:
        Unavailable.__init__(
            self,
            detail="the read-model store is unreachable; retry shortly (writes are still accepted onto the log)",
            retry_after_s=STORE_RETRY_AFTER_S,
        )
        self.engine_message = message  # for the server's log only: it may name hosts

    def __str__(self) -> str:
        return f"{self.detail}: {self.engine_message}"


class SqlStore(Protocol):
    """A ClickHouse-SQL engine: statements, parameterised queries and batch inserts.

    Values cross the port as plain Python values, never spliced into SQL text:

    - parameters are named in the SQL as ClickHouse server-side query parameters,
      `{name:Type}` (for example `WHERE org_id = {org_id:String}`), and given in
      `parameters` as `str`, `int`, `float`, `bool`, `None` (for `Nullable`), `list` or
      `tuple` (for `Array`), or a timezone-aware `datetime` (for `DateTime64(6, 'UTC')`);
    - inserted rows are mappings of column name to the same kinds of value; every row of
      one batch names the same columns;
    - query rows come back as dicts in the order of the select list, with `int`, `float`,
      `str`, `bool`, `None`, `list`, and timezone-aware UTC `datetime` values.

    A naive `datetime` is refused (`ValueError`): a time without a zone is a bug here.
    Identifiers (table names) are SQL text; callers build them from constants only.
    """

    async def execute(self, sql: str, parameters: Mapping[str, object] | None = None) -> None:
        """Run a statement that returns no rows (DDL, TRUNCATE, EXCHANGE, ...)."""
        ...

    async def query(
        self, sql: str, parameters: Mapping[str, object] | None = None
    ) -> list[dict[str, object]]:
        """Run a SELECT and return every row as a dict keyed by column name."""
        ...

    async def insert(self, table: str, rows: Sequence[Mapping[str, object]]) -> None:
        """Insert `rows` into `table` as ONE INSERT (one part), nothing when `rows` is empty."""
        ...

    async def close(self) -> None:
        """Release the engine; calling it again does nothing."""
        ...
