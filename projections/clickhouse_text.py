"""ClickHouse's text formats: escaped parameter values, JSONEachRow rows, JSONCompact results — shared by the chDB and HTTP adapters."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "check_parameter_name",
    "decode_rows",
    "insert_statement",
    "insert_target",
    "json_each_row",
    "parameter_text",
]

# Table, column and parameter names are SQL text (or URL keys), so only plain identifiers
# (and for tables, optionally db.table) pass.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")

# Backslash escapes of ClickHouse's escaped and quoted text forms.
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\b": "\\b", "\f": "\\f"}
_QUOTED_ESCAPES = {**_ESCAPES, "'": "\\'"}
_ESCAPED = str.maketrans(_ESCAPES)
_QUOTED = str.maketrans(_QUOTED_ESCAPES)

# The text form ClickHouse reads and writes for DateTime64(6) (microseconds, no zone).
_DATETIME_TEXT = "%Y-%m-%d %H:%M:%S.%f"


# --- names -------------------------------------------------------------------------------


def check_parameter_name(name: str) -> None:
    """Refuse (ValueError) a parameter name that is not a plain identifier."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain parameter name: {name!r}")


def insert_target(table: str, rows: Sequence[Mapping[str, object]]) -> tuple[str, list[str]]:
    """The quoted table name and the columns of a batch of rows, all checked.

    Names must be plain identifiers, and every row must name the same columns in the same
    order (the first row's). `rows` must not be empty.
    """
    if not _TABLE_NAME.fullmatch(table):
        raise ValueError(f"not a plain table name: {table!r}")
    columns = list(rows[0])
    for column in columns:
        if not _IDENTIFIER.fullmatch(column):
            raise ValueError(f"not a plain column name: {column!r}")
    for row in rows:
        if list(row) != columns:
            raise ValueError(f"every row of a batch must name the columns {columns}, got {list(row)}")
    return ".".join(f"`{part}`" for part in table.split(".")), columns


def insert_statement(table: str, rows: Sequence[Mapping[str, object]]) -> str:
    """`INSERT INTO `table` (`column`, ...)` for a batch of rows, checked as insert_target does."""
    quoted_table, columns = insert_target(table, rows)
    return f"INSERT INTO {quoted_table} ({', '.join(f'`{column}`' for column in columns)})"


# --- values into the engine ----------------------------------------------------------------


def parameter_text(value: object) -> str:
    """`value` in ClickHouse's escaped text form, the form a `{name:Type}` parameter is read in."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_ESCAPED)
    if isinstance(value, (list, tuple)):
        # Array elements are read in the quoted form, which has no raw tab or newline left.
        return _literal(value)
    return _scalar_text(value)


def _literal(value: object) -> str:
    """`value` as a ClickHouse literal, the form of an element inside an array."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.translate(_QUOTED) + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_literal(element) for element in value) + "]"
    if isinstance(value, (datetime, date)):
        return "'" + _scalar_text(value) + "'"
    return _scalar_text(value)


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        return _utc_text(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot bind a {type(value).__name__} as a query parameter")


def json_each_row(rows: Sequence[Mapping[str, object]]) -> bytes:
    """The rows as a JSONEachRow body (UTF-8): data that never passes through the SQL parser."""
    return "\n".join(json.dumps(row, ensure_ascii=False, default=_json_value) for row in rows).encode("utf-8")


def _json_value(value: object) -> object:
    """json.dumps hook: the JSON form of values JSON has no type for."""
    if isinstance(value, datetime):
        return _utc_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot insert a {type(value).__name__}")


def _utc_text(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: give it a time zone (UTC)")
    return moment.astimezone(timezone.utc).strftime(_DATETIME_TEXT)


# --- rows out of the engine ----------------------------------------------------------------

_Decoder = Callable[[Any], object]


def decode_rows(output: bytes) -> list[dict[str, object]]:
    """A `FORMAT JSONCompact` result as rows of Python values (no output at all: no rows)."""
    if not output:
        return []  # statements without a result set write nothing at all
    result = json.loads(output)
    names = [column["name"] for column in result["meta"]]
    decoders = [
        (index, decoder)
        for index, column in enumerate(result["meta"])
        if (decoder := _decoder_for(column["type"])) is not None
    ]
    rows: list[dict[str, object]] = []
    for values in result["data"]:
        for index, decoder in decoders:
            values[index] = decoder(values[index])
        rows.append(dict(zip(names, values)))
    return rows


def _decoder_for(type_name: str) -> _Decoder | None:
    """How to turn a JSONCompact value of ClickHouse type `type_name` into Python (None: as is)."""
    if type_name.startswith("LowCardinality("):
        return _decoder_for(type_name[len("LowCardinality(") : -1])
    if type_name.startswith("Nullable("):
        inner = _decoder_for(type_name[len("Nullable(") : -1])
        if inner is None:
            return None
        return lambda value: None if value is None else inner(value)
    if type_name.startswith("Array("):
        element = _decoder_for(type_name[len("Array(") : -1])
        if element is None:
            return None
        return lambda values: [element(value) for value in values]
    if type_name.startswith("DateTime"):
        return _datetime_decoder(type_name)
    if type_name in ("Date", "Date32"):
        return date.fromisoformat
    if type_name.startswith(("Int", "UInt")):
        # 64-bit and wider integers may come quoted (output_format_json_quote_64bit_integers,
        # which a server turns on by default).
        return lambda value: int(value) if isinstance(value, str) else value
    if type_name.startswith(("Float", "BFloat")):
        return lambda value: float(value) if isinstance(value, str) else value
    return None


def _datetime_decoder(type_name: str) -> _Decoder:
    # A DateTime without a zone is written in the session zone, which both adapters pin to
    # UTC (the chDB session is opened with it; every HTTP request carries session_timezone).
    zone_match = re.search(r"'([^']+)'", type_name)
    zone = timezone.utc if zone_match is None or zone_match[1] == "UTC" else ZoneInfo(zone_match[1])

    def decode(text: str) -> datetime:
        # DateTime64(9) has nanoseconds; Python keeps microseconds.
        return datetime.fromisoformat(text[:26]).replace(tzinfo=zone)

    return decode
