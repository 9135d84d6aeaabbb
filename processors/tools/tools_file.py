"""The tools file: the MCP servers turnlog may call, and which of their tools whom it offers (see `tools.example.toml`).

`parse_tools_file` reads it (TOML) into a `ToolsConfig`; anything wrong stops with `ToolsFileError`, which
names the file, the line and the problem (`tools.toml:14: tools[1].timeout_s: must be a number, got "fast"`).
The tools turnlog runs itself (`file_search`) are declared on the reserved server `builtin`, which no
`[[servers]]` table declares; a file may declare only those.
Nothing here reads a file, the environment or a clock: credentials are rendered per call by the adapter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from kernel.config_files import ConfigFileError, read_toml
from processors.tools.catalog import SERVER_NAME, DeclarationError, ToolPolicy
from processors.tools.credentials import CredentialTemplate
from processors.tools.loop import LoopBudget
from processors.tools.code_interpreter_settings import LIMIT_KEYS, CodeInterpreterSettings, limits_from
from processors.tools.web.settings import WebSearchSettings

Transport = Literal["streamable-http", "stdio"]
TRANSPORTS: tuple[Transport, ...] = get_args(Transport)

DEFAULT_CONNECT_TIMEOUT_S = 10.0
# The server of the tools turnlog runs itself (`processors/tools/builtin.py`), and their names: reserved.
BUILTIN_SERVER = "builtin"
BUILTIN_TOOLS = ("file_search", "web_search", "code_interpreter")
# Built-in tools that act beyond the caller's own data: off until a `[[tools]]` table declares them (for
# the orgs and workspaces it names), each with its own settings table.
OPT_IN_TOOLS = ("web_search", "code_interpreter")
# Of those, the ones that cannot run without their settings table (the others have defaults for all of it).
NEEDS_SETTINGS = ("web_search",)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ToolsFileError(ConfigFileError):
    """A tools file that cannot be used: `source`, `line` (1-based, when known), `field`, `problem`."""


@dataclass(frozen=True, kw_only=True)
class ServerDeclaration:
    """One MCP server: how to reach it and the credentials each call renders for its caller."""

    name: str
    transport: Transport
    url: str | None = None  # streamable-http: the MCP endpoint
    command: str | None = None  # stdio: the program to run ...
    args: tuple[str, ...] = ()  # ... with these arguments
    cwd: str | None = None  # stdio: where it runs
    headers: Mapping[str, CredentialTemplate] = field(default_factory=dict)  # streamable-http: sent with every request
    env: Mapping[str, CredentialTemplate] = field(default_factory=dict)  # stdio: the process's environment, over a safe base
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S  # connecting and listing its tools may take this long

    def __post_init__(self) -> None:
        if not SERVER_NAME.fullmatch(self.name):
            raise DeclarationError(
                field="name", problem=f"{self.name!r}: a server name is 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
            )
        if self.name == BUILTIN_SERVER:
            raise DeclarationError(field="name", problem=f"{BUILTIN_SERVER!r} is reserved for the tools turnlog runs itself")
        if self.transport not in TRANSPORTS:
            raise DeclarationError(field="transport", problem=f"unknown transport {self.transport!r}; choose {' or '.join(TRANSPORTS)}")
        if self.transport == "streamable-http":
            if not self.url:
                raise DeclarationError(field="url", problem="a streamable-http server needs its URL")
            if not self.url.startswith(("http://", "https://")):
                raise DeclarationError(field="url", problem=f"{self.url!r} is not an http(s) URL")
            for key in ("command", "cwd"):
                if getattr(self, key) is not None:
                    raise DeclarationError(field=key, problem="only stdio servers are run as a command")
            if self.args or self.env:
                raise DeclarationError(field="args" if self.args else "env", problem="only stdio servers are run as a command")
        else:
            if not self.command:
                raise DeclarationError(field="command", problem="a stdio server needs the command that runs it")
            if self.url is not None:
                raise DeclarationError(field="url", problem="a stdio server is run as a command, not reached by URL")
            if self.headers:
                raise DeclarationError(field="headers", problem="a stdio server takes no HTTP headers; give credentials in env")
        for name in self.headers:
            if not _HEADER_NAME.fullmatch(name):
                raise DeclarationError(field=f"headers.{name}", problem=f"{name!r} is not an HTTP header name")
        for name in self.env:
            if not _ENV_NAME.fullmatch(name):
                raise DeclarationError(field=f"env.{name}", problem=f"{name!r} is not an environment variable name")
        if not math.isfinite(self.connect_timeout_s) or self.connect_timeout_s <= 0:
            raise DeclarationError(field="connect_timeout_s", problem=f"must be a finite number > 0, got {self.connect_timeout_s}")

    @property
    def credentials(self) -> Mapping[str, CredentialTemplate]:
        """What each call renders for its caller: the headers (HTTP) or the environment (stdio)."""
        return self.headers if self.transport == "streamable-http" else self.env


@dataclass(frozen=True, kw_only=True)
class ToolsConfig:
    """The servers and the tools offered from them; a tool's name is unique across all servers (the model's namespace)."""

    servers: tuple[ServerDeclaration, ...]
    tools: tuple[ToolPolicy, ...]
    budget: LoopBudget = LoopBudget()  # each run's calls, steps and time (`[budget]`)
    web_search: WebSearchSettings | None = None  # `[web_search]`: where SearXNG answers, what a call reads
    code_interpreter: CodeInterpreterSettings | None = None  # `[code_interpreter]`: the sandbox's limits, per org

    def __post_init__(self) -> None:
        server_names: dict[str, int] = {}
        for index, server in enumerate(self.servers):
            if server.name in server_names:
                raise DeclarationError(field=f"servers[{index}].name", problem=f"server {server.name!r} is declared twice")
            server_names[server.name] = index
        tool_names: set[str] = set()
        for index, tool in enumerate(self.tools):
            if tool.name in tool_names:
                raise DeclarationError(
                    field=f"tools[{index}].name", problem=f"tool {tool.name!r} is declared twice (the model knows tools by name alone)"
                )
            tool_names.add(tool.name)
            if tool.server == BUILTIN_SERVER:
                if tool.name not in BUILTIN_TOOLS:
                    raise DeclarationError(
                        field=f"tools[{index}].name",
                        problem=f"turnlog has no built-in tool {tool.name!r}; built-in tools are {', '.join(BUILTIN_TOOLS)}",
                    )
                continue
            if tool.name in BUILTIN_TOOLS:
                raise DeclarationError(
                    field=f"tools[{index}].name",
                    problem=f"{tool.name!r} is turnlog's own tool; declare it with server = {BUILTIN_SERVER!r}",
                )
            if tool.server not in server_names:
                known = ", ".join(server_names) or "none"
                raise DeclarationError(field=f"tools[{index}].server", problem=f"no server named {tool.server!r}; servers are {known}")
        for name in OPT_IN_TOOLS:
            declared = next((index for index, tool in enumerate(self.tools) if tool.name == name), None)
            configured = getattr(self, name) is not None
            if declared is not None and not configured and name in NEEDS_SETTINGS:
                raise DeclarationError(field=f"tools[{declared}].name", problem=f"{name!r} needs its settings: add a [{name}] table")
            if configured and declared is None:
                raise DeclarationError(
                    field=name,
                    problem=f'[{name}] configures a tool nobody may use: enable it with a [[tools]] table, server = "builtin", '
                    f'name = "{name}" (and orgs or workspaces to limit it)',
                )
        used = {tool.server for tool in self.tools}
        for name, index in server_names.items():
            if name not in used:
                raise DeclarationError(
                    field=f"servers[{index}].name", problem=f"server {name!r} offers no tools; add a [[tools]] table for each tool, or remove it"
                )

    def server(self, name: str) -> ServerDeclaration:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(f"no server named {name!r}")

    def tool(self, name: str) -> ToolPolicy | None:
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None

    def tools_of(self, server: str) -> tuple[ToolPolicy, ...]:
        return tuple(tool for tool in self.tools if tool.server == server)

    def served(self) -> ToolsConfig:
        """The declarations without the built-in tools: what the MCP servers are asked for."""
        return ToolsConfig(servers=self.servers, tools=tuple(tool for tool in self.tools if tool.server != BUILTIN_SERVER))

    def environment_names(self) -> tuple[str, ...]:
        """Every environment variable the credentials name (to check at start that each is set)."""
        names = {name for server in self.servers for template in server.credentials.values() for name in template.environment_names}
        return tuple(sorted(names))


# --- the file ---------------------------------------------------------------------------------------

_SERVER_KEYS: Mapping[str, str] = {
    # key -> kind of value: str, number, int, bool, strings (a list), templates (a table of strings)
    "name": "str", "transport": "str", "url": "str", "command": "str", "args": "strings", "cwd": "str",
    "headers": "templates", "env": "templates", "connect_timeout_s": "number",
}
_REQUIRED_SERVER_KEYS = ("name", "transport")
_TOOL_KEYS: Mapping[str, str] = {
    "server": "str", "name": "str", "orgs": "strings", "workspaces": "strings", "timeout_s": "number",
    "idempotent": "bool", "require_approval": "bool", "long": "bool", "max_result_tokens": "int",
}
_REQUIRED_TOOL_KEYS = ("server", "name")
_WEB_SEARCH_KEYS: Mapping[str, str] = {
    "searxng_url": "str", "search_timeout_s": "number", "max_pages": "int", "page_timeout_s": "number",
    "max_page_bytes": "int", "max_redirects": "int", "passage_chars": "int", "allow_hosts": "strings",
}
_BUDGET_KEYS: Mapping[str, str] = {
    "max_calls": "int", "max_steps": "int", "wall_clock_s": "number", "interactive_s": "number", "approval_timeout_s": "number",
    "runner_grace_s": "number",
}
_KIND_NAMES = {
    "str": "a string", "number": "a number", "int": "an integer", "bool": "true or false",
    "strings": "a list of strings", "templates": 'a table of strings, e.g. { Authorization = "Bearer ${env:TOKEN}" }',
}


def parse_tools_file(text: str | bytes, *, source: str = "tools.toml") -> ToolsConfig:
    """A tools file's declarations; `ToolsFileError` names the line and the field at fault (`tools[1].timeout_s`)."""
    text, document = read_toml(text, source=source, error=ToolsFileError)

    def fail(error: DeclarationError, where: str = "") -> ToolsFileError:
        path = f"{where}.{error.field}" if where and error.field else (error.field or where)
        return ToolsFileError(source=source, line=_line_of(text, path), field=path, problem=error.problem)

    try:
        unknown = sorted(set(document) - {"servers", "tools", "budget", "web_search", "code_interpreter"})
        if unknown:
            raise DeclarationError(
                field=unknown[0],
                problem="unknown section; sections are [[servers]], [[tools]], [budget], [web_search] and [code_interpreter]",
            )
        servers = [
            _build(ServerDeclaration, values, where)
            for where, values in _tables(document, "servers", _SERVER_KEYS, _REQUIRED_SERVER_KEYS, optional=True)
        ]
        tools = [
            _build(ToolPolicy, values, where) for where, values in _tables(document, "tools", _TOOL_KEYS, _REQUIRED_TOOL_KEYS)
        ]
        if not servers and any(tool.server != BUILTIN_SERVER for tool in tools):
            raise DeclarationError(field="servers", problem="declare at least one [[servers]] table")  # only built-in tools need none
        budget = _single_table(document, "budget", LoopBudget, _BUDGET_KEYS) or LoopBudget()
        web_search = _single_table(document, "web_search", WebSearchSettings, _WEB_SEARCH_KEYS, required=("searxng_url",))
        code_interpreter = _code_interpreter(document)
        return ToolsConfig(
            servers=tuple(servers), tools=tuple(tools), budget=budget, web_search=web_search, code_interpreter=code_interpreter
        )
    except _Located as located:
        raise fail(located.error, located.where) from None
    except DeclarationError as error:
        raise fail(error) from None


class _Located(Exception):
    """A declaration's own error on its way out, with the table it came from."""

    def __init__(self, error: DeclarationError, where: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.where = where


def _tables(
    document: Mapping[str, object], section: str, keys: Mapping[str, str], required: tuple[str, ...], *, optional: bool = False
) -> list[tuple[str, dict[str, object]]]:
    entries = document.get(section)
    if optional and section not in document:
        return []
    if not isinstance(entries, list) or not entries:
        raise DeclarationError(field=section, problem=f"declare at least one [[{section}]] table")
    tables = []
    for index, entry in enumerate(entries):
        where = f"{section}[{index}]"
        if not isinstance(entry, dict):
            raise DeclarationError(field=where, problem=f"each entry is a [[{section}]] table")
        values = _read_table(entry, keys, where=where)
        missing = [key for key in required if key not in values]
        if missing:
            raise DeclarationError(field=where, problem=f"{missing[0]!r} is required")
        tables.append((where, values))
    return tables


def _single_table(document: Mapping[str, object], section: str, cls, keys: Mapping[str, str], *, required: tuple[str, ...] = ()):
    """A plain `[section]` table built into `cls`; None when the file has none."""
    if section not in document:
        return None
    if not isinstance(document[section], dict):
        raise DeclarationError(field=section, problem=f"must be a [{section}] table")
    values = _read_table(document[section], keys, where=section)
    missing = [key for key in required if key not in values]
    if missing:
        raise DeclarationError(field=section, problem=f"{missing[0]!r} is required")
    return _build(cls, values, section)


def _code_interpreter(document: Mapping[str, object]) -> CodeInterpreterSettings | None:
    """`[code_interpreter]` and its `[code_interpreter.orgs.<org>]` tables; None when the file has neither."""
    table = document.get("code_interpreter")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise DeclarationError(field="code_interpreter", problem="must be a [code_interpreter] table")
    table = dict(table)
    orgs = table.pop("orgs", {})
    if not isinstance(orgs, dict) or not all(isinstance(value, dict) for value in orgs.values()):
        raise DeclarationError(field="code_interpreter.orgs", problem="must hold one [code_interpreter.orgs.<org>] table per org")
    keys = dict.fromkeys(LIMIT_KEYS, "number")
    limits = _build(limits_from, {"values": _read_table(table, keys, where="code_interpreter")}, "code_interpreter")
    by_org = {
        org: _build(limits_from, {"values": _read_table(values, keys, where=f"code_interpreter.orgs.{org}"), "base": limits},
                    f"code_interpreter.orgs.{org}")
        for org, values in orgs.items()
    }
    return CodeInterpreterSettings(limits=limits, by_org=by_org)


def _read_table(table: Mapping[str, object], keys: Mapping[str, str], *, where: str) -> dict[str, object]:
    """The table's values, each checked against the kind its key takes; unknown keys are refused (typos)."""
    values: dict[str, object] = {}
    for key, value in table.items():
        name = f"{where}.{key}"
        kind = keys.get(key)
        if kind is None:
            raise DeclarationError(field=name, problem=f"unknown key; keys are {', '.join(keys)}")
        # bool is an int in Python; TOML's `true` is not a number here.
        right = {
            "str": isinstance(value, str),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "strings": isinstance(value, list) and all(isinstance(item, str) for item in value),
            "templates": isinstance(value, dict) and all(isinstance(item, str) for item in value.values()),
        }[kind]
        if not right:
            raise DeclarationError(field=name, problem=f"must be {_KIND_NAMES[kind]}, got {_toml_value(value)}")
        if kind == "number":
            value = float(value)  # type: ignore[arg-type]
        elif kind == "strings":
            value = tuple(value)  # type: ignore[arg-type]
        elif kind == "templates":
            value = {sub: _template(text, field_name=f"{name}.{sub}") for sub, text in value.items()}  # type: ignore[union-attr]
        values[key] = value
    return values


def _template(text: str, *, field_name: str) -> CredentialTemplate:
    try:
        return CredentialTemplate.parse(text)
    except DeclarationError as error:
        raise DeclarationError(field=field_name, problem=error.problem) from None


def _build(cls, values: dict[str, object], where: str):
    try:
        return cls(**values)
    except DeclarationError as error:
        raise _Located(error, where) from None


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list" if value else "[]"
    return repr(value)


# --- where in the text a field is -------------------------------------------------------------------

_ARRAY_HEADER = re.compile(r"\s*\[\[\s*([A-Za-z0-9_-]+)\s*\]\]\s*(#.*)?")
_TABLE_HEADER = re.compile(r"\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?")


def _line_of(text: str, path: str) -> int | None:
    """The 1-based line that `path` (`servers[1].headers.Authorization`, `tools[0]`, `servers`) points at.

    A light scan of the text, which tomllib does not give back: the `[[section]]` header of the n-th table,
    then the line where its key is set, then the sub-key inside it (an inline table or a sub-table).
    """
    match = re.fullmatch(r"([A-Za-z0-9_-]+)(?:\[(\d+)\])?(?:\.([^.]+))?(?:\.(.+))?", path)
    if match is None:
        return None
    section, index, key, sub_key = match.group(1), match.group(2), match.group(3), match.group(4)
    lines = text.splitlines()
    spans = _spans(lines, section)
    if index is None:
        if spans:
            return spans[0][0] + 1
        header = _first(lines, 0, len(lines), _key_pattern(section), rf"\s*\[\s*{_quoted(section)}\s*[\].]")
        if header is not None and key is not None:  # a key of a plain `[section]` table: its own line
            end = next((n for n in range(header, len(lines)) if _TABLE_HEADER.fullmatch(lines[n]) or _ARRAY_HEADER.fullmatch(lines[n])), len(lines))
            return _first(lines, header, end, _key_pattern(key)) or header
        return header
    if int(index) >= len(spans):
        # An array written inline (`tools = [{...}]`): the best there is, the line that starts it.
        return _first(lines, 0, len(lines), _key_pattern(section))
    start, end = spans[int(index)]
    if key is None:
        return start + 1
    key_line = _first(lines, start, end, _key_pattern(key), rf"\s*\[\s*{re.escape(section)}\s*\.\s*{_quoted(key)}\s*\]")
    if key_line is None:
        return start + 1
    if sub_key is None:
        return key_line
    sub_line = _first(lines, key_line - 1, end, rf"(?:^|.*[\s{{,]){_quoted(sub_key)}\s*=")
    return sub_line or key_line


def _spans(lines: list[str], section: str) -> list[tuple[int, int]]:
    """[start, end) line ranges (0-based) of each `[[section]]` table, sub-tables such as `[section.env]` included."""
    spans: list[tuple[int, int]] = []
    current: int | None = None
    for number, line in enumerate(lines):
        array = _ARRAY_HEADER.fullmatch(line)
        table = None if array else _TABLE_HEADER.fullmatch(line)
        if array is None and table is None:
            continue
        if table is not None and current is not None and re.match(rf"{re.escape(section)}\s*\.", table.group(1)):
            continue
        if current is not None:
            spans.append((current, number))
            current = None
        if array is not None and array.group(1) == section:
            current = number
    if current is not None:
        spans.append((current, len(lines)))
    return spans


def _quoted(key: str) -> str:
    escaped = re.escape(key)
    return rf"(?:{escaped}|\"{escaped}\"|'{escaped}')"


def _key_pattern(key: str) -> str:
    return rf"\s*{_quoted(key)}\s*[=.]"


def _first(lines: list[str], start: int, end: int, *patterns: str) -> int | None:
    for number in range(start, end):
        if any(re.match(pattern, lines[number]) for pattern in patterns):
            return number + 1
    return None
