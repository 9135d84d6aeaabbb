"""The MCP adapter against real MCP servers (the SDK's own), over Streamable HTTP and stdio: listing and calling,
timeouts cancelled at the tool, a server that is down, credentials per caller, tool errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernel.envelope import Actor
from processors.tools.catalog import ToolResult
from processors.tools.mcp import McpToolExecutor
from processors.tools.tools_file import ToolsConfig, parse_tools_file

SERVER_SCRIPT = Path(__file__).with_name("mcp_test_server.py")

ALICE = Actor(user_id="user_alice", org_id="org_a", workspace_id="ws_a1")
BOB = Actor(user_id="user_bob", org_id="org_a", workspace_id="ws_a2")
CAROL = Actor(user_id="user_carol", org_id="org_b", workspace_id="ws_b1")
ENVIRON = {"REMOTE_TOKEN": "remote-secret", "LOCAL_TOKEN": "local-secret"}

# Generous: the machine may be loaded; a test waits on conditions, never on fixed sleeps.
CONDITION_DEADLINE_S = 30.0


def tools_toml(*, http_url: str, dead_url: str, stdio_events: Path) -> str:
    args = [str(SERVER_SCRIPT), "stdio", "--prefix", "local_", "--events", str(stdio_events)]
    return f"""
[[servers]]
name = "remote"
transport = "streamable-http"
url = {json.dumps(http_url)}
headers = {{ Authorization = "Bearer ${{env:REMOTE_TOKEN}}.${{user}}", "X-Turnlog-User" = "${{user}}" }}
connect_timeout_s = 30

[[servers]]
name = "local"
transport = "stdio"
command = {json.dumps(sys.executable)}
args = {json.dumps(args)}
env = {{ TOOL_TOKEN = "${{env:LOCAL_TOKEN}}.${{user}}", TOOL_USER = "${{user}}" }}
connect_timeout_s = 60

[[servers]]
name = "down"
transport = "streamable-http"
url = {json.dumps(dead_url)}
connect_timeout_s = 30

[[tools]]
server = "remote"
name = "add"
idempotent = true

[[tools]]
server = "remote"
name = "whoami"

[[tools]]
server = "remote"
name = "sleep"
timeout_s = 3

[[tools]]
server = "remote"
name = "fail"

[[tools]]
server = "remote"
name = "image"

[[tools]]
server = "remote"
name = "meta_key"

[[tools]]
server = "remote"
name = "secret"
orgs = ["org_b"]

[[tools]]
server = "remote"
name = "vanished"

[[tools]]
server = "local"
name = "local_add"

[[tools]]
server = "local"
name = "local_whoami"

[[tools]]
server = "local"
name = "local_sleep"

[[tools]]
server = "local"
name = "local_crash"

[[tools]]
server = "local"
name = "local_pid"

[[tools]]
server = "down"
name = "ghost"
"""


@dataclass(frozen=True, kw_only=True)
class Harness:
    executor: McpToolExecutor
    config: ToolsConfig
    http_events: Path
    stdio_events: Path

    async def call(self, tool: str, arguments: dict, *, actor: Actor = ALICE, timeout_s: float = 30.0) -> ToolResult:
        return await self.executor.call(
            tool, arguments, actor=actor, idempotency_key=f"idem-{uuid.uuid4().hex}", timeout_s=timeout_s
        )


@pytest.fixture
async def harness(http_mcp_server, dead_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    stdio_events = tmp_path / "stdio-events.log"
    stdio_events.touch()
    config = parse_tools_file(
        tools_toml(http_url=http_mcp_server.url, dead_url=dead_url, stdio_events=stdio_events), source="test-tools.toml"
    )
    executor = McpToolExecutor(config=config, environ=ENVIRON, retry_after_s=60.0)
    await executor.start()
    try:
        yield Harness(executor=executor, config=config, http_events=http_mcp_server.events, stdio_events=stdio_events)
    finally:
        await executor.close()


async def eventually_contains(path: Path, line: str) -> None:
    deadline = time.monotonic() + CONDITION_DEADLINE_S
    while line not in path.read_text(encoding="utf-8").splitlines():
        assert time.monotonic() < deadline, f"{path.name} never recorded {line!r}: {path.read_text(encoding='utf-8')!r}"
        await asyncio.sleep(0.05)


async def test_lists_the_declared_tools_each_server_offers_with_their_schemas(harness: Harness) -> None:
    specs = await harness.executor.list_tools(actor=ALICE)

    # The file's order; `secret` is org_b's, `vanished` is not on the server, `ghost`'s server is down.
    assert [spec.name for spec in specs] == [
        "add", "whoami", "sleep", "fail", "image", "meta_key", "local_add", "local_whoami", "local_sleep", "local_crash",
        "local_pid",
    ]
    add = specs[0]
    assert add.description == "Adds two integers."
    schema = json.loads(add.parameters)
    assert schema["type"] == "object" and set(schema["properties"]) == {"a", "b"} and set(schema["required"]) == {"a", "b"}
    assert set(json.loads(specs[-3].parameters)["properties"]) == {"seconds", "label"}


async def test_calls_tools_over_streamable_http_and_stdio(harness: Harness) -> None:
    over_http, over_stdio = await asyncio.gather(
        harness.call("add", {"a": 2, "b": 3}), harness.call("local_add", {"a": 40, "b": 2})
    )

    assert (over_http.status, over_http.content, over_http.is_error) == ("completed", "5", False)
    assert (over_stdio.status, over_stdio.content, over_stdio.is_error) == ("completed", "42", False)
    assert over_http.duration_ms >= 0


async def test_a_tool_error_is_a_failed_result_with_its_text(harness: Harness) -> None:
    result = await harness.call("fail", {"message": "the index is offline"})

    # The text is the server's own (the SDK's server prefixes it with the tool's name).
    assert (result.status, result.is_error) == ("failed", True)
    assert result.content.endswith("the index is offline")


async def test_content_that_is_not_text_is_named(harness: Harness) -> None:
    result = await harness.call("image", {})

    assert (result.status, result.content) == ("completed", "[image]")


async def test_the_idempotency_key_reaches_the_server(harness: Harness) -> None:
    result = await harness.executor.call("meta_key", {}, actor=ALICE, idempotency_key="run_1:call_7", timeout_s=30.0)

    assert (result.status, result.content) == ("completed", "run_1:call_7")


async def test_only_admitted_callers_see_and_call_a_tool(harness: Harness) -> None:
    assert "secret" in [spec.name for spec in await harness.executor.list_tools(actor=CAROL)]
    assert "secret" not in [spec.name for spec in await harness.executor.list_tools(actor=ALICE)]

    refused = await harness.call("secret", {}, actor=ALICE)
    unknown = await harness.call("no_such_tool", {}, actor=ALICE)
    granted = await harness.call("secret", {}, actor=CAROL)

    assert (refused.status, refused.content) == ("failed", "no tool named 'secret' is available")
    assert (unknown.status, unknown.content) == ("failed", "no tool named 'no_such_tool' is available")
    assert (granted.status, granted.content) == ("completed", "the secret")


@pytest.mark.parametrize(("tool", "warm_up", "events"), [("sleep", "add", "http_events"), ("local_sleep", "local_add", "stdio_events")])
async def test_a_call_past_its_timeout_is_timed_out_promptly_and_cancelled_at_the_tool(
    harness: Harness, tool: str, warm_up: str, events: str
) -> None:
    # Connect first, so the deadline is spent on the call itself and the tool surely starts.
    assert (await harness.call(warm_up, {"a": 1, "b": 1})).status == "completed"
    events_file: Path = getattr(harness, events)
    label = f"{tool}-{uuid.uuid4().hex[:8]}"

    started = time.monotonic()
    result = await harness.call(tool, {"seconds": 600, "label": label}, timeout_s=3.0)
    elapsed = time.monotonic() - started

    assert (result.status, result.content, result.is_error) == ("timed_out", "timed out after 3 s", True)
    assert 2.9 <= elapsed < 3.0 + 15.0  # abandoned at the deadline, not after the tool's 600 s
    await eventually_contains(events_file, f"started {label}")
    await eventually_contains(events_file, f"cancelled {label}")
    assert f"finished {label}" not in events_file.read_text(encoding="utf-8")
    # The session outlives the abandoned call.
    assert (await harness.call(warm_up, {"a": 2, "b": 2})).content == "4"


async def test_a_server_that_is_down_makes_only_its_tools_unavailable_with_the_reason(harness: Harness) -> None:
    names = [spec.name for spec in await harness.executor.list_tools(actor=ALICE)]
    ghost = await harness.call("ghost", {})
    over_http, over_stdio = await asyncio.gather(
        harness.call("add", {"a": 1, "b": 2}), harness.call("local_add", {"a": 3, "b": 4})
    )

    assert "ghost" not in names and "add" in names and "local_add" in names
    assert (ghost.status, ghost.is_error) == ("unavailable", True)
    assert ghost.content.startswith("the down server is unavailable: ") and len(ghost.content) > len("the down server is unavailable: ")
    assert (over_http.status, over_http.content) == ("completed", "3")
    assert (over_stdio.status, over_stdio.content) == ("completed", "7")
    reasons = harness.executor.unavailable(actor=ALICE)
    assert set(reasons) == {"ghost", "vanished"}
    assert reasons["ghost"] == ghost.content
    assert reasons["vanished"] == "the remote server does not offer it"


async def test_an_unreachable_server_answers_at_once_without_waiting_for_the_call_deadline(harness: Harness) -> None:
    started = time.monotonic()
    result = await harness.call("ghost", {}, timeout_s=120.0)

    assert result.status == "unavailable"
    assert time.monotonic() - started < 30.0  # connection refused is immediate; the deadline was never the limit


async def test_each_callers_credentials_reach_the_server_and_never_another_callers_call(harness: Harness) -> None:
    callers = [ALICE, BOB, ALICE, BOB, BOB, ALICE, ALICE, BOB]

    results = await asyncio.gather(
        *(harness.call("whoami", {}, actor=caller) for caller in callers),
        *(harness.call("local_whoami", {}, actor=caller) for caller in callers),
    )

    over_http, over_stdio = results[: len(callers)], results[len(callers) :]
    for caller, result in zip(callers, over_http, strict=True):
        assert result.content == f"authorization=Bearer remote-secret.{caller.user_id} user={caller.user_id}"
    for caller, result in zip(callers, over_stdio, strict=True):
        assert result.content == f"token=local-secret.{caller.user_id} user={caller.user_id}"


async def test_a_missing_environment_variable_makes_its_servers_tools_unavailable(harness: Harness) -> None:
    executor = McpToolExecutor(config=harness.config, environ={"LOCAL_TOKEN": "local-secret"})
    await executor.start()
    try:
        result = await executor.call("add", {"a": 1, "b": 1}, actor=ALICE, idempotency_key="k", timeout_s=30.0)
        names = [spec.name for spec in await executor.list_tools(actor=ALICE)]
        reasons = executor.unavailable(actor=ALICE)
    finally:
        await executor.close()

    assert (result.status, result.content) == (
        "unavailable", "the remote server is not configured: the environment variable REMOTE_TOKEN is not set",
    )
    assert "add" not in names and "local_add" in names
    assert reasons["add"] == result.content


async def test_a_server_that_dies_during_a_call_fails_that_call_and_the_next_call_gets_a_new_session(harness: Harness) -> None:
    assert (await harness.call("local_add", {"a": 1, "b": 1})).status == "completed"

    crashed = await harness.call("local_crash", {})
    after = await harness.call("local_add", {"a": 2, "b": 3})

    # Not `unavailable`: the call reached the server, which may have acted on it before it died.
    assert (crashed.status, crashed.is_error) == ("failed", True)
    assert crashed.content.startswith("the connection to the local server broke during the call, which may have run: ")
    assert (after.status, after.content) == ("completed", "5")


async def test_a_stdio_server_that_exits_while_idle_is_replaced_before_the_next_call(harness: Harness) -> None:
    first = await harness.call("local_pid", {})
    os.kill(int(first.content), signal.SIGKILL)
    # The session notices its server's end on its own (the pipe closes); wait for that, not for a while.
    deadline = time.monotonic() + CONDITION_DEADLINE_S
    while any(session.usable for session in harness.executor._sessions.values() if session.server.name == "local"):
        assert time.monotonic() < deadline, "the session never noticed that its server exited"
        await asyncio.sleep(0.05)

    second = await harness.call("local_pid", {})  # not idempotent: it must not be sent to the dead session

    assert second.status == "completed" and second.content != first.content


async def test_a_stdio_server_that_cannot_be_started_makes_its_tools_unavailable_with_the_reason(harness: Harness) -> None:
    config = parse_tools_file(
        '[[servers]]\nname = "broken"\ntransport = "stdio"\ncommand = "/nonexistent/mcp-server"\n'
        '[[tools]]\nserver = "broken"\nname = "anything"\n'
    )
    executor = McpToolExecutor(config=config, environ={})
    try:
        names = [spec.name for spec in await executor.list_tools(actor=ALICE)]
        result = await executor.call("anything", {}, actor=ALICE, idempotency_key="k", timeout_s=30.0)
    finally:
        await executor.close()

    assert names == []
    assert result.status == "unavailable"
    assert result.content.startswith("the broken server is unavailable: ") and "/nonexistent/mcp-server" in result.content


async def test_a_server_that_never_answers_costs_one_connect_timeout_and_then_no_turn_waits_for_it(
    harness: Harness, silent_url: str
) -> None:
    config = parse_tools_file(
        f'[[servers]]\nname = "silent"\ntransport = "streamable-http"\nurl = "{silent_url}"\nconnect_timeout_s = 1\n'
        f'[[servers]]\nname = "remote"\ntransport = "streamable-http"\nurl = "{harness.config.server("remote").url}"\n'
        '[[tools]]\nserver = "silent"\nname = "hush"\n'
        '[[tools]]\nserver = "remote"\nname = "add"\n'
    )
    executor = McpToolExecutor(config=config, environ={}, retry_after_s=60.0)
    try:
        started = time.monotonic()
        first = [spec.name for spec in await executor.list_tools(actor=ALICE)]
        first_s = time.monotonic() - started
        started = time.monotonic()
        second = [spec.name for spec in await executor.list_tools(actor=ALICE)]
        second_s = time.monotonic() - started
        hush = await executor.call("hush", {}, actor=ALICE, idempotency_key="k", timeout_s=30.0)
    finally:
        await executor.close()

    assert first == ["add"] and second == ["add"]
    assert 0.9 <= first_s < 15.0  # the connect timeout, not the call's or the OS's
    assert second_s < first_s  # no second wait: the server is retried in the background
    assert (hush.status, hush.content) == ("unavailable", "the silent server is unavailable: no answer within 1 s")
