"""Operators' TOML files (tools, tiers, policies): one error shape naming the file, the line and the field, and
one reader that turns bytes that are not UTF-8 or not TOML into that error with the line tomllib reports."""

from __future__ import annotations

import re
import tomllib
from typing import Any

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


class ConfigFileError(ValueError):
    """A file that cannot be used: `source` (the file), `line` (1-based, when known), `field`, `problem`."""

    def __init__(self, *, source: str, line: int | None, field: str, problem: str) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")
        self.source = source
        self.line = line
        self.field = field
        self.problem = problem


def read_toml(text: str | bytes, *, source: str, error: type[ConfigFileError]) -> tuple[str, dict[str, Any]]:
    """The text and its document; `error` (the file's own subclass) when it is not UTF-8 or not valid TOML."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as problem:
            raise error(source=source, line=None, field="", problem=f"not UTF-8: {problem}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as problem:
        message = str(problem)
        position = _TOML_POSITION.search(message)
        if position is None:
            raise error(source=source, line=None, field="", problem=f"not valid TOML: {message}") from None
        where = f"not valid TOML: {message[: position.start()]} (column {position.group(2)})"
        raise error(source=source, line=int(position.group(1)), field="", problem=where) from None
