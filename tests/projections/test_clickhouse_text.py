"""ClickHouse's text formats, without an engine: what both SqlStore adapters send and read back."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.clickhouse_text import (
    check_parameter_name,
    decode_rows,
    insert_statement,
    insert_target,
    json_each_row,
    parameter_text,
)

MOMENT = datetime(2024, 5, 17, 9, 30, 1, 123456, tzinfo=timezone.utc)

# --- parameter values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "\\N"),
        ("plain", "plain"),
        ("it's", "it's"),  # the escaped form leaves quotes alone
        ("tab\tnew\nline\rcr", "tab\\tnew\\nline\\rcr"),
        ("back\\slash \0 \b \f", "back\\\\slash \\0 \\b \\f"),
        ("\\N", "\\\\N"),  # the text \N, not NULL
        (True, "true"),
        (False, "false"),
        (2**64 - 1, "18446744073709551615"),
        (-7, "-7"),
        (0.5, "0.5"),
        (MOMENT, "2024-05-17 09:30:01.123456"),
        (MOMENT.astimezone(timezone(timedelta(hours=2))), "2024-05-17 09:30:01.123456"),
        (date(2024, 5, 17), "2024-05-17"),
        ([], "[]"),
        (("a", "b"), "['a','b']"),
        (["it's", "tab\there", None], "['it\\'s','tab\\there',NULL]"),
        ([[1, 2], [], [3]], "[[1,2],[],[3]]"),
        ([MOMENT, date(2024, 5, 17)], "['2024-05-17 09:30:01.123456','2024-05-17']"),
        ([True, 1.5], "[true,1.5]"),
    ],
)
def test_parameter_text_is_the_escaped_form(value: object, text: str) -> None:
    assert parameter_text(value) == text


def test_naive_datetimes_and_unknown_types_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        parameter_text(datetime(2024, 5, 17))
    with pytest.raises(ValueError, match="naive"):
        parameter_text([datetime(2024, 5, 17)])
    with pytest.raises(TypeError, match="cannot bind a dict"):
        parameter_text({"a": 1})
    with pytest.raises(TypeError, match="cannot bind a bytes"):
        parameter_text(b"raw")


@given(st.text())
def test_escaped_strings_keep_no_raw_control_characters_and_unescape_back(value: str) -> None:
    text = parameter_text(value)

    assert not set(text) & set("\t\n\r\0\b\f")
    unescape = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "0": "\0", "b": "\b", "f": "\f"}
    restored, characters = [], iter(text)
    for character in characters:
        restored.append(unescape[next(characters)] if character == "\\" else character)
    assert "".join(restored) == value


@pytest.mark.parametrize("name", ["a", "_x", "note_id", "A1"])
def test_plain_parameter_names_pass(name: str) -> None:
    check_parameter_name(name)


@pytest.mark.parametrize("name", ["", "1a", "$name$", "a b", "a.b", "a-b", "a\n"])
def test_other_parameter_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a plain parameter name"):
        check_parameter_name(name)


# --- inserts ---------------------------------------------------------------------------------


def test_insert_target_quotes_the_table_and_keeps_the_column_order() -> None:
    rows = [{"b": 1, "a": 2}, {"b": 3, "a": 4}]

    assert insert_target("notes", rows) == ("`notes`", ["b", "a"])
    assert insert_target("db.notes", rows) == ("`db`.`notes`", ["b", "a"])
    assert insert_statement("db.notes", rows) == "INSERT INTO `db`.`notes` (`b`, `a`)"


@pytest.mark.parametrize(
    ("table", "rows", "complaint"),
    [
        ("notes; DROP TABLE x", [{"a": 1}], "not a plain table name"),
        ("a.b.c", [{"a": 1}], "not a plain table name"),
        ("`notes`", [{"a": 1}], "not a plain table name"),
        ("notes", [{"a` b": 1}], "not a plain column name"),
        ("notes", [{"a": 1}, {"b": 1}], "every row of a batch"),
        ("notes", [{"a": 1, "b": 2}, {"b": 2, "a": 1}], "every row of a batch"),
        ("notes", [{"a": 1, "b": 2}, {"a": 1}], "every row of a batch"),
    ],
)
def test_insert_targets_are_checked(table: str, rows: list[dict[str, object]], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        insert_target(table, rows)
    with pytest.raises(ValueError, match=complaint):
        insert_statement(table, rows)


def test_json_each_row_is_one_utf8_json_object_a_line() -> None:
    rows = [
        {"text": "é\n中", "at": MOMENT.astimezone(timezone(timedelta(hours=-5))), "day": date(2024, 5, 17)},
        {"text": None, "at": MOMENT, "day": date(2024, 5, 18), "tags": ("a", "b")},
    ]

    body = json_each_row(rows)

    assert body.decode("utf-8").splitlines() == [
        '{"text": "é\\n中", "at": "2024-05-17 09:30:01.123456", "day": "2024-05-17"}',
        '{"text": null, "at": "2024-05-17 09:30:01.123456", "day": "2024-05-18", "tags": ["a", "b"]}',
    ]
    assert "é".encode() in body  # not \u00e9


def test_json_each_row_refuses_naive_datetimes_and_unknown_types() -> None:
    with pytest.raises(ValueError, match="naive"):
        json_each_row([{"at": datetime(2024, 5, 17)}])
    with pytest.raises(TypeError, match="cannot insert a set"):
        json_each_row([{"tags": {"a"}}])


# --- results ---------------------------------------------------------------------------------


def _json_compact(meta: list[tuple[str, str]], data: list[list[object]]) -> bytes:
    return json.dumps({"meta": [{"name": n, "type": t} for n, t in meta], "data": data, "rows": len(data)}).encode()


def test_no_output_is_no_rows() -> None:
    assert decode_rows(b"") == []
    assert decode_rows(_json_compact([("a", "UInt8")], [])) == []


def test_rows_decode_by_column_type_in_select_list_order() -> None:
    output = _json_compact(
        [
            ("z", "String"),
            ("big", "UInt64"),
            ("small", "Int32"),
            ("huge", "Int256"),
            ("ratio", "Float64"),
            ("half", "BFloat16"),
            ("on", "Bool"),
            ("day", "Date"),
            ("day32", "Date32"),
            ("at", "DateTime"),
            ("at6", "DateTime64(6, 'UTC')"),
            ("at9", "DateTime64(9)"),
            ("paris", "DateTime64(3, 'Europe/Paris')"),
            ("maybe", "Nullable(UInt64)"),
            ("never", "Nullable(DateTime64(6, 'UTC'))"),
            ("kind", "LowCardinality(String)"),
            ("kinds", "Array(LowCardinality(Nullable(String)))"),
            ("ats", "Array(Nullable(DateTime64(6, 'UTC')))"),
            ("counts", "Array(Array(UInt64))"),
        ],
        [
            [
                "text",
                "18446744073709551615",
                -7,
                "-1",
                "inf",
                0.5,
                True,
                "2024-05-17",
                "1900-01-01",
                "2024-05-17 09:30:01",
                "2024-05-17 09:30:01.123456",
                "2024-05-17 09:30:01.123456789",
                "2024-05-17 11:30:01.123",
                "5",
                None,
                "a",
                ["a", None],
                ["2024-05-17 09:30:01.123456", None],
                [["1", "2"], []],
            ]
        ],
    )

    [row] = decode_rows(output)

    assert list(row) == [
        "z", "big", "small", "huge", "ratio", "half", "on", "day", "day32", "at", "at6", "at9", "paris",
        "maybe", "never", "kind", "kinds", "ats", "counts",
    ]  # fmt: skip
    assert row == {
        "z": "text",
        "big": 2**64 - 1,
        "small": -7,
        "huge": -1,
        "ratio": float("inf"),
        "half": 0.5,
        "on": True,
        "day": date(2024, 5, 17),
        "day32": date(1900, 1, 1),
        "at": datetime(2024, 5, 17, 9, 30, 1, tzinfo=timezone.utc),
        "at6": MOMENT,
        "at9": MOMENT,  # nanoseconds cut to microseconds
        "paris": datetime(2024, 5, 17, 11, 30, 1, 123000, tzinfo=ZoneInfo("Europe/Paris")),
        "maybe": 5,
        "never": None,
        "kind": "a",
        "kinds": ["a", None],
        "ats": [MOMENT, None],
        "counts": [[1, 2], []],
    }
    assert row["paris"] == datetime(2024, 5, 17, 9, 30, 1, 123000, tzinfo=timezone.utc)
    assert row["at"].tzinfo is timezone.utc
