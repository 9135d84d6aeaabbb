"""The tools file: a valid file's declarations, and each mistake reported with the file, its line and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.tools.catalog import ToolPolicy
from processors.tools.credentials import Placeholder
from processors.tools.tools_file import ToolsFileError, parse_tools_file

EXAMPLE = Path(__file__).resolve().parents[3] / "tools.example.toml"

VALID = """\
[[servers]]
name = "search"
transport = "streamable-http"
url = "http://127.0.0.1:9000/mcp"
headers = { Authorization = "Bearer ${env:SEARCH_KEY}", "X-User" = "${user}@${org}" }

[[servers]]
name = "files"
transport = "stdio"
command = "files-mcp"
args = ["--root", "/srv"]
connect_timeout_s = 3

[servers.env]
FILES_USER = "${ user }"

[[tools]]
server = "search"
name = "search_web"
idempotent = true
timeout_s = 5
max_result_tokens = 100

[[tools]]
server = "files"
name = "read_file"
orgs = ["org_a"]
workspaces = ["ws_1", "ws_2"]
require_approval = true
long = true
"""


def test_a_valid_file_gives_its_servers_and_tools_with_defaults() -> None:
    config = parse_tools_file(VALID, source="tools.toml")

    search, files = config.servers
    assert (search.name, search.transport, search.url, search.connect_timeout_s) == (
        "search", "streamable-http", "http://127.0.0.1:9000/mcp", 10.0,
    )
    assert search.headers["Authorization"].environment_names == ("SEARCH_KEY",)
    assert search.headers["X-User"].parts == (Placeholder(source="user"), "@", Placeholder(source="org"))
    assert (files.command, files.args, files.connect_timeout_s) == ("files-mcp", ("--root", "/srv"), 3.0)
    assert files.env["FILES_USER"].parts == (Placeholder(source="user"),)
    assert config.tools == (
        ToolPolicy(server="search", name="search_web", idempotent=True, timeout_s=5.0, max_result_tokens=100),
        ToolPolicy(
            server="files", name="read_file", orgs=("org_a",), workspaces=("ws_1", "ws_2"), require_approval=True, long=True
        ),
    )
    assert config.tools[1].timeout_s == 30.0 and not config.tools[1].idempotent
    assert config.tool("read_file") is config.tools[1] and config.tool("nope") is None
    assert config.tools_of("search") == (config.tools[0],)
    assert config.environment_names() == ("SEARCH_KEY",)


def test_the_example_file_is_valid_and_documents_every_key() -> None:
    config = parse_tools_file(EXAMPLE.read_text(encoding="utf-8"), source=str(EXAMPLE))

    assert [server.name for server in config.servers] == ["search", "files"]
    assert [tool.name for tool in config.tools] == [
        "search_intranet", "read_file", "delete_file", "crawl_site", "file_search", "web_search", "code_interpreter",
    ]
    assert config.code_interpreter is not None and config.code_interpreter.by_org["org_acme"].memory_bytes == 1024 * 2**20
    assert config.web_search is not None and config.web_search.searxng_url == "http://searxng:8080"
    assert (config.budget.max_calls, config.budget.interactive_s, config.budget.runner_grace_s) == (8, 60, 15)
    text = EXAMPLE.read_text(encoding="utf-8")
    for key in (
        "name", "transport", "url", "command", "args", "cwd", "headers", "env", "connect_timeout_s",
        "server", "orgs", "workspaces", "timeout_s", "idempotent", "require_approval", "long", "max_result_tokens",
        "max_calls", "max_steps", "wall_clock_s", "interactive_s", "approval_timeout_s", "runner_grace_s",
        "searxng_url", "search_timeout_s", "max_pages", "page_timeout_s", "max_page_bytes", "max_redirects",
        "passage_chars", "allow_hosts", "memory_mib", "cpu_s", "wall_s", "file_mib", "processes", "open_files", "output_kib",
    ):
        assert f"\n{key} = " in text, key


def _error(text: str) -> ToolsFileError:
    with pytest.raises(ToolsFileError) as caught:
        parse_tools_file(text, source="conf/tools.toml")
    return caught.value


SERVER = '[[servers]]\nname = "s"\ntransport = "streamable-http"\nurl = "http://h/mcp"\n'  # lines 1-4
TOOL = '\n[[tools]]\nserver = "s"\nname = "t"\n'  # lines 5-8


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [
        pytest.param(SERVER + TOOL + "timeout_s = \n", 9, "", "not valid TOML: Invalid value (column 13)", id="toml syntax"),
        pytest.param(SERVER + TOOL + "timout_s = 3\n", 9, "tools[0].timout_s", "unknown key; keys are server, name,", id="unknown key"),
        pytest.param(SERVER + TOOL + 'timeout_s = "fast"\n', 9, "tools[0].timeout_s", 'must be a number, got "fast"', id="wrong type"),
        pytest.param(SERVER + TOOL + "\n[budget]\nmax_calls = 4\nwall_clock_s = 0\n", 12, "budget.wall_clock_s",
                     "must be a finite number > 0, got 0.0", id="budget out of range"),
        pytest.param(SERVER + TOOL + "\n[budget]\nmax_call = 4\n", 11, "budget.max_call", "unknown key; keys are max_calls,",
                     id="budget unknown key"),
        pytest.param(SERVER + TOOL + '[[tools]]\nserver = "builtin"\nname = "web_search"\n', 11, "tools[1].name",
                     "'web_search' needs its settings: add a [web_search] table", id="web_search without settings"),
        pytest.param(SERVER + TOOL + '\n[web_search]\nsearxng_url = "http://s"\n', 10, "web_search",
                     "[web_search] configures a tool nobody may use", id="web_search not enabled"),
        pytest.param(SERVER + TOOL + '[[tools]]\nserver = "builtin"\nname = "web_search"\n[web_search]\nsearxng_url = "ftp://s"\n',
                     13, "web_search.searxng_url", "'ftp://s' is not an http(s) URL", id="web_search bad url"),
        pytest.param(SERVER + TOOL + '[[tools]]\nserver = "builtin"\nname = "code_interpreter"\n[code_interpreter]\nprocesses = 2\n',
                     13, "code_interpreter.processes", "the sandbox's own init and the interpreter need at least 4",
                     id="code_interpreter too few processes"),
        pytest.param(SERVER + TOOL + '\n[code_interpreter]\nwall_s = 5\n', 10, "code_interpreter",
                     "[code_interpreter] configures a tool nobody may use", id="code_interpreter not enabled"),
        pytest.param(SERVER + TOOL + "idempotent = 1\n", 9, "tools[0].idempotent", "must be true or false, got 1", id="int for bool"),
        pytest.param(SERVER + TOOL + "orgs = 'org_a'\n", 9, "tools[0].orgs", "must be a list of strings", id="string for list"),
        pytest.param(SERVER + TOOL + "timeout_s = -1\n", 9, "tools[0].timeout_s", "must be a finite number > 0, got -1.0", id="negative timeout"),
        pytest.param(SERVER + TOOL + "max_result_tokens = 0\n", 9, "tools[0].max_result_tokens", "must be >= 1", id="zero tokens"),
        pytest.param(SERVER + '\n[[tools]]\nname = "t"\n', 6, "tools[0]", "'server' is required", id="missing key"),
        pytest.param(SERVER + '\n[[tools]]\nserver = "nope"\nname = "t"\n', 7, "tools[0].server", "no server named 'nope'; servers are s", id="unknown server"),
        pytest.param(
            SERVER + TOOL + TOOL, 12, "tools[1].name", "tool 't' is declared twice", id="duplicate tool",
        ),
        pytest.param(
            SERVER + '\n[[servers]]\nname = "s"\ntransport = "stdio"\ncommand = "x"\n' + TOOL,
            7, "servers[1].name", "server 's' is declared twice", id="duplicate server",
        ),
        pytest.param(SERVER + TOOL.replace('"t"', '"has space"'), 8, "tools[0].name", "a tool name is 1-64 of", id="bad tool name"),
        pytest.param(
            SERVER.replace('"http://h/mcp"', '"ftp://h"') + TOOL, 4, "servers[0].url", "is not an http(s) URL", id="bad url",
        ),
        pytest.param(
            SERVER.replace("streamable-http", "websocket") + TOOL, 3, "servers[0].transport", "unknown transport 'websocket'", id="bad transport",
        ),
        pytest.param(
            '[[servers]]\nname = "s"\ntransport = "stdio"\n' + TOOL, 1, "servers[0].command", "a stdio server needs the command", id="stdio without command",
        ),
        pytest.param(
            '[[servers]]\nname = "s"\ntransport = "stdio"\ncommand = "x"\nheaders = { A = "b" }\n' + TOOL,
            5, "servers[0].headers", "a stdio server takes no HTTP headers", id="headers on stdio",
        ),
        pytest.param(
            SERVER + 'headers = { Authorization = "Bearer ${api_key}" }\n' + TOOL,
            5, "servers[0].headers.Authorization", "${api_key} is not a placeholder turnlog fills", id="unknown placeholder",
        ),
        pytest.param(
            SERVER + 'headers = { A = "1", "X-Who" = "${model}" }\n' + TOOL,
            5, "servers[0].headers.X-Who", "${model} is not a placeholder", id="placeholder in second header",
        ),
        pytest.param(
            SERVER + '\n[servers.headers]\nA = "ok"\nB = "${env:1BAD}"\n' + TOOL,
            8, "servers[0].headers.B", "'1BAD' is not an environment variable name", id="bad env name in sub-table",
        ),
        pytest.param(
            SERVER + 'headers = { A = "${env:KEY" }\n' + TOOL, 5, "servers[0].headers.A", "opens '${' without closing it", id="unclosed placeholder",
        ),
        pytest.param(
            SERVER + 'headers = { A = 3 }\n' + TOOL, 5, "servers[0].headers", "must be a table of strings", id="non-string header",
        ),
        pytest.param(SERVER, None, "tools", "declare at least one [[tools]] table", id="no tools"),
        pytest.param(
            SERVER + '\n[[servers]]\nname = "idle"\ntransport = "stdio"\ncommand = "x"\n' + TOOL.replace("\n[[", "[["),
            7, "servers[1].name", "server 'idle' offers no tools", id="server without tools",
        ),
        pytest.param("[limits]\nx = 1\n" + SERVER + TOOL, 1, "limits", "unknown section; sections are [[servers]], [[tools]], [budget], [web_search] and [code_interpreter]", id="unknown section"),
    ],
)
def test_each_mistake_names_the_file_the_line_and_the_problem(text: str, line: int | None, field: str, problem: str) -> None:
    error = _error(text)

    assert (error.source, error.line, error.field) == ("conf/tools.toml", line, field)
    assert problem in error.problem
    where = f"conf/tools.toml:{line}" if line is not None else "conf/tools.toml"
    assert str(error).startswith(f"{where}: {field + ': ' if field else ''}")


def test_an_inline_array_of_tables_is_read_and_its_errors_point_at_the_array() -> None:
    config = parse_tools_file(
        '# inline\nservers = [{ name = "s", transport = "stdio", command = "x" }]\ntools = [{ server = "s", name = "t" }]\n'
    )
    assert config.tools[0].name == "t"

    error = _error('servers = [{ name = "s", transport = "stdio", command = "x" }]\n\ntools = [{ server = "s", name = 5 }]\n')
    assert (error.line, error.field) == (3, "tools[0].name")


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(ToolsFileError, match="not UTF-8"):
        parse_tools_file(b"name = \xff", source="t.toml")
