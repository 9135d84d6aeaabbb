"""`code_interpreter` as a tool, in a real sandbox: what the model reads back, the files it wrote in the blob store,
attached files read as the caller, limits per org, the call's timeout, and the tool disabled (with how to enable it)
where bubblewrap is missing. Every escape the issue lists ends as a clean tool result; one the filter kills is reported
to governance as the caller's violation."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema
import pytest

from commands.governance.violations import SANDBOX_ESCAPE, GovernanceViolations
from events.blobs import DirectoryBlobStore
from events.embedded import EmbeddedLog
from events.governance import ViolationReported
from events.topics import GOVERNANCE_REQUESTS
from kernel.envelope import Actor
from processors.tools.catalog import ToolPolicy, ToolResult
from processors.tools.code_interpreter import (
    CODE_INTERPRETER,
    DEFAULT_POLICY,
    PARAMETERS,
    CodeInterpreterTool,
    input_name,
    spec_for,
)
from processors.tools.sandbox import HOW_TO_ENABLE, Sandbox, SandboxLimits, SandboxUnavailable
from processors.tools.tools_file import BUILTIN_SERVER
from turnlog.adapters import build_codec

ANA = Actor(user_id="ana", org_id="acme", workspace_id="research")
GUS = Actor(user_id="gus", org_id="globex", workspace_id="research")
QUICK = SandboxLimits(wall_s=4.0, cpu_s=2)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    if shutil.which("bwrap") is None:
        pytest.fail(
            "bubblewrap (bwrap) is not installed, so code_interpreter cannot be tested. `make setup` installs it "
            "when it runs as root on a machine with apt (CI does); elsewhere: `sudo apt-get install bubblewrap`. "
            "If this machine cannot install packages, code_interpreter cannot run here either.",
            pytrace=False,
        )
    sandbox = Sandbox()
    try:
        asyncio.run(sandbox.probe())
    except SandboxUnavailable as error:  # e.g. a kernel that refuses unprivileged user namespaces
        pytest.fail(f"code_interpreter cannot run on this machine: {error}", pytrace=False)
    return sandbox


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[DirectoryBlobStore]:
    store = DirectoryBlobStore(root=tmp_path / "blobs")
    await store.start()
    try:
        yield store
    finally:
        await store.close()


class AttachedFiles:
    """The caller's attachments as `read_file` sees them: ana's two files; nobody else's."""

    def __init__(self) -> None:
        self.files = {("ana", "file_sales"): ("sales.csv", b"month,total\njan,10\nfeb,32\n"),
                      ("ana", "file_notes"): ("../../notes.txt", b"ana's notes")}
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, actor: Actor, file_id: str) -> tuple[str, bytes] | None:
        self.asked.append((actor.user_id, file_id))
        return self.files.get((actor.user_id, file_id))


async def started(tool: CodeInterpreterTool) -> CodeInterpreterTool:
    await tool.start()
    return tool


async def call(tool: CodeInterpreterTool, code: str, actor: Actor = ANA, timeout_s: float = 60.0, **extra) -> ToolResult:
    return await tool.call(CODE_INTERPRETER, {"code": code, **extra}, actor=actor, idempotency_key="run_1:call_1", timeout_s=timeout_s)


async def test_it_is_offered_with_its_limits_and_its_result_is_what_the_code_printed(sandbox: Sandbox) -> None:
    tool = await started(CodeInterpreterTool(sandbox=sandbox))
    assert await tool.list_tools(actor=ANA) == [spec_for(SandboxLimits())] and tool.unavailable(actor=ANA) == {}
    result = await call(tool, "import numpy\nprint('sum', int(numpy.arange(10**6).sum()))\n2 ** 10")
    assert (result.status, result.is_error) == ("completed", False)
    assert result.content.startswith("exit code 0, after ")
    assert "stdout:\nsum 499999500000\n1024" in result.content
    # What it used, recorded on the log and in the tool_calls table (never shown to the model).
    assert result.exit_code == 0 and result.cpu_ms is not None
    held = await call(tool, "import time\nblock = bytearray(200 * 1024 * 1024)\nblock[::4096] = b'x' * len(block[::4096])\ntime.sleep(0.5)")
    assert held.memory_bytes is not None and 200 * 2**20 <= held.memory_bytes < 512 * 2**20  # sampled while it ran
    nothing = await call(tool, "x = 1")
    assert nothing.status == "completed" and nothing.content.endswith("(nothing printed)")


async def test_an_error_fails_the_call_with_the_traceback_for_the_model_to_fix(sandbox: Sandbox) -> None:
    tool = await started(CodeInterpreterTool(sandbox=sandbox))
    result = await call(tool, "import json\njson.loads('{oops')")
    assert (result.status, result.is_error, result.exit_code) == ("failed", True, 1)
    assert result.content.startswith("exit code 1, after ")
    assert "stderr:\nTraceback (most recent call last):" in result.content
    assert 'File "/sandbox/main.py", line 2, in <module>' in result.content and "JSONDecodeError" in result.content


async def test_files_it_writes_are_stored_as_blobs_and_listed_with_their_ids(sandbox: Sandbox, blobs) -> None:
    tool = await started(CodeInterpreterTool(sandbox=sandbox, blobs=blobs))
    result = await call(tool, "import os\nos.mkdir('out')\nopen('out/report.txt', 'w').write('total: 42\\n')\nprint('written')")
    assert result.status == "completed"
    line = next(line for line in result.content.splitlines() if line.startswith("- out/report.txt"))
    digest = line.split("sha256:")[1].rstrip(")")
    assert line == f"- out/report.txt (10 bytes, file id sha256:{digest})"
    assert await blobs.get(digest) == b"total: 42\n"

    # Without a blob store the files are still listed, without ids.
    unstored = await started(CodeInterpreterTool(sandbox=sandbox))
    listed = await call(unstored, "open('a.txt', 'w').write('a')")
    assert "files written in /work:\n- a.txt (1 bytes)" in listed.content


async def test_attached_files_are_read_as_the_caller_and_mounted_read_only(sandbox: Sandbox) -> None:
    attached = AttachedFiles()
    tool = await started(CodeInterpreterTool(sandbox=sandbox, read_file=attached))
    code = "import os\nprint(sorted(os.listdir('inputs')))\nprint(open('inputs/sales.csv').read().splitlines()[-1])"
    result = await call(tool, code, files=["file_sales", "file_notes"])
    assert result.status == "completed", result.content
    assert "stdout:\n['notes.txt', 'sales.csv']\nfeb,32" in result.content
    assert "files written" not in result.content  # the inputs are not the code's files
    # Another user's file (or one that does not exist) is refused before anything runs.
    refused = await call(tool, "print('ran')", actor=GUS, files=["file_sales"])
    assert (refused.status, refused.content) == ("failed", "files: no file 'file_sales' is available to this user")
    assert attached.asked[-1] == ("gus", "file_sales")
    # Without a way to read files, naming one is refused too.
    no_reader = await started(CodeInterpreterTool(sandbox=sandbox))
    assert (await call(no_reader, "print(1)", files=["file_sales"])).status == "failed"


def test_input_names_are_made_safe_and_unique() -> None:
    assert input_name("sales.csv", "file_1", taken=set()) == "sales.csv"
    assert input_name("../../etc/passwd", "file_1", taken=set()) == "passwd"
    assert input_name("..", "file_2", taken=set()) == "file_2"
    assert input_name("sales.csv", "file_3", taken={"sales.csv"}) == "file_3-sales.csv"
    assert input_name("r\u00e9sum\u00e9 (1).pdf", "file_4", taken=set()) == "r\u00e9sum\u00e9 (1).pdf"
    assert input_name("a\nb\"c'.txt", "file_5", taken=set()) == "a_b_c_.txt"


async def test_limits_come_per_org_and_the_calls_timeout_is_held_too(sandbox: Sandbox) -> None:
    limits = {"acme": SandboxLimits(wall_s=2.0), "globex": SandboxLimits(wall_s=30.0, memory_bytes=256 * 2**20)}
    tool = await started(CodeInterpreterTool(sandbox=sandbox, limits_for=lambda actor: limits[actor.org_id]))
    assert "2 s wall clock" in (await tool.list_tools(actor=ANA))[0].description
    assert "256 MiB memory" in (await tool.list_tools(actor=GUS))[0].description

    started_at = time.monotonic()
    slept = await call(tool, "import time\nprint('started', flush=True)\ntime.sleep(600)")
    assert slept.status == "failed" and slept.content.startswith("killed at the wall-clock limit (2 s), after ")
    assert "stdout:\nstarted" in slept.content and time.monotonic() - started_at < 2.0 + 10.0

    # The call's own timeout, when shorter than the org's wall clock, ends it.
    started_at = time.monotonic()
    cut = await call(tool, "import time\ntime.sleep(600)", actor=GUS, timeout_s=1.5)
    assert cut.status == "failed" and cut.content.startswith("killed at the wall-clock limit (1.")
    assert time.monotonic() - started_at < 1.5 + 10.0


async def test_a_policy_limits_who_may_run_code_and_bad_arguments_are_refused(sandbox: Sandbox) -> None:
    tool = await started(CodeInterpreterTool(sandbox=sandbox, policy=ToolPolicy(server=BUILTIN_SERVER, name=CODE_INTERPRETER, orgs=("globex",))))
    assert await tool.list_tools(actor=ANA) == [] and len(await tool.list_tools(actor=GUS)) == 1
    refused = await call(tool, "print(1)")
    assert (refused.status, refused.content) == ("failed", "no tool named 'code_interpreter' is available")
    assert (await tool.call("other", {"code": "print(1)"}, actor=GUS, idempotency_key="k", timeout_s=5)).status == "failed"
    for arguments, problem in (({}, "code: a non-empty string is required"), ({"code": "  "}, "code: a non-empty string is required"),
                               ({"code": "print(1)", "files": "file_1"}, "files: must be a list of file ids")):
        result = await tool.call(CODE_INTERPRETER, arguments, actor=GUS, idempotency_key="k", timeout_s=5)
        assert (result.status, result.content) == ("failed", problem)


def test_arguments_follow_the_schema_it_offers() -> None:
    spec = spec_for(SandboxLimits())
    assert json.loads(spec.parameters) == PARAMETERS and spec.name == CODE_INTERPRETER
    validator = jsonschema.Draft202012Validator(PARAMETERS)
    assert validator.is_valid({"code": "print(1)"}) and validator.is_valid({"code": "print(1)", "files": ["file_1"]})
    assert not validator.is_valid({}) and not validator.is_valid({"code": ""})
    assert not validator.is_valid({"code": "print(1)", "network": True})
    assert "30 s wall clock, 10 s CPU, 512 MiB memory, 10 MiB per file" in spec.description
    assert DEFAULT_POLICY.timeout_s > SandboxLimits().wall_s  # the sandbox's own clock stops the code first


async def test_without_bubblewrap_the_tool_is_disabled_and_says_how_to_enable_it() -> None:
    tool = await started(CodeInterpreterTool(sandbox=Sandbox(bwrap="/nonexistent/bwrap")))
    assert await tool.list_tools(actor=ANA) == []
    reason = tool.unavailable(actor=ANA)[CODE_INTERPRETER]
    assert reason.startswith("code_interpreter is disabled: bubblewrap (/nonexistent/bwrap) was not found.")
    assert HOW_TO_ENABLE in reason and "apt-get install bubblewrap" in reason and "make setup" in reason and "sandbox" in reason
    result = await call(tool, "print(1)")
    assert (result.status, result.content) == ("unavailable", reason)


ESCAPES = {
    "socket to an outside address": (
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)", "PermissionError: [Errno 1] Operation not permitted"),
    "socket to the server's own port": (
        "import socket\nsocket.create_connection(('127.0.0.1', 8000), timeout=2)", "PermissionError: [Errno 1]"),
    "reading the data directory": ("open('/data/secret.key').read()", "FileNotFoundError"),
    "reading /etc/passwd": ("print(open('/etc/passwd').read())", "FileNotFoundError"),
    "writing outside the work directory": ("open('/usr/lib/escaped', 'w')", "OSError: [Errno 30] Read-only file system"),
    "a fork bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", "killed at the wall-clock limit (4 s)"),
    "allocating 2 GiB": ("x = bytearray(2 * 1024**3)", "MemoryError"),
    # 2 s of CPU, or on a loaded machine the 4 s wall clock first (test_sandbox.py checks the CPU limit itself).
    "spinning the CPU": ("while True:\n    pass", "killed at the "),
    "sleeping past the timeout": ("import time\ntime.sleep(3600)", "killed at the wall-clock limit (4 s)"),
    "printing 1 GB": ("import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * (1 << 20))", "bytes cut ...]"),
    "writing a 1 GB file": ("f = open('big', 'wb')\nfor _ in range(1024):\n    f.write(b'x' * (1 << 20))", "File too large"),
    "a background process": ("import subprocess\nsubprocess.Popen(['sleep', '1000'])\nprint('left behind')", "left behind"),
}


@pytest.mark.parametrize("escape", list(ESCAPES))
async def test_every_escape_is_contained_and_reported_as_a_clean_tool_result(sandbox: Sandbox, escape: str) -> None:
    code, expected = ESCAPES[escape]
    tool = await started(CodeInterpreterTool(sandbox=sandbox, limits_for=lambda actor: QUICK))
    result = await call(tool, code, timeout_s=60.0)
    assert isinstance(result, ToolResult) and result.status in ("completed", "failed")
    assert expected in result.content, result.content
    assert len(result.content) < 2 * QUICK.output_bytes + 1000  # what the model reads stays bounded


async def test_an_escape_attempt_is_reported_to_governance_as_the_callers_violation(
    sandbox: Sandbox, embedded_log: EmbeddedLog
) -> None:
    codec = build_codec()
    tool = await started(CodeInterpreterTool(
        sandbox=sandbox, limits_for=lambda actor: QUICK, violations=GovernanceViolations(log=embedded_log, codec=codec)
    ))
    refused = await call(tool, "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)")
    assert refused.status == "failed" and "PermissionError" in refused.content  # innocent enough: refused, not reported
    assert await embedded_log.read(GOVERNANCE_REQUESTS, key=ANA.org_id) == []

    result = await call(tool, "import ctypes\nprint('looking around')\nctypes.CDLL(None).ptrace(16, 1, 0, 0)\nprint('attached')")
    assert (result.status, result.exit_code) == ("failed", 159)
    assert "exit code 159 (killed: it made a system call the sandbox forbids)" in result.content
    assert "stdout:\nlooking around" in result.content and "attached" not in result.content
    [report] = [codec.decode(record.value) for record in await embedded_log.read(GOVERNANCE_REQUESTS, key=ANA.org_id)]
    assert report.payload == ViolationReported(
        org_id="acme", user_id="ana", kind=SANDBOX_ESCAPE,
        detail="call run_1:call_1: killed: it made a system call the sandbox forbids", by="tool:code_interpreter",
    )
    assert report.actor == ANA and report.key == "acme"
