"""`code_interpreter` as a tool the model calls: its Python run in a fresh sandbox (`processors/tools/sandbox.py`) per call.

The sandbox is checked at start (a tiny program must run and find sockets refused); where it cannot run,
the tool is not offered and `unavailable` says how to enable it. A call runs within the actor's limits
(`limits_for`, per org from the tools file) and the call's timeout, whichever ends first; the attached files
it names are read as the actor (`read_file`) and mounted read-only; the files the code writes go to the blob
store and are listed with their digests. Whatever the code does, the call ends in a result, never an exception.
A run the sandbox killed for a call only an escape makes is reported to governance as the caller's violation
(`sandbox_escape`, through the `ViolationReporter` it is given).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from typing import Any

from commands.governance.violations import SANDBOX_ESCAPE, IgnoredViolations, ViolationReporter
from events.blobs import BlobStore
from events.sealed_blobs import put_owned
from events.values import ToolSpec
from kernel.envelope import Actor
from kernel.sealed_payloads import subject_of
from kernel.sealing import Subject
from processors.tools.catalog import ToolPolicy, ToolResult, allowed
from processors.tools.sandbox import (
    INPUTS,
    WORK,
    Sandbox,
    SandboxLimits,
    SandboxOutcome,
    SandboxUnavailable,
    check_input_name,
)
from processors.tools.tools_file import BUILTIN_SERVER

logger = logging.getLogger(__name__)

CODE_INTERPRETER = "code_interpreter"
# The sandbox's own wall clock (30 s by default) ends the code; the rest is its start, reading back and storing files.
DEFAULT_POLICY = ToolPolicy(server=BUILTIN_SERVER, name=CODE_INTERPRETER, timeout_s=40.0)
MAX_CODE_CHARS = 100_000
MAX_FILES = 20

# The attached files the code may read: by id, as the actor sees them. None: no such file, or not this actor's to read.
ReadFile = Callable[[Actor, str], Awaitable[tuple[str, bytes] | None]]

PARAMETERS: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "code": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_CODE_CHARS,
            "description": "A complete Python 3 program. Print what you want to see; the value of a last bare "
            "expression is printed too.",
        },
        "files": {
            "type": "array",
            "items": {"type": "string"},
            "maxItems": MAX_FILES,
            "description": f"Ids of the user's attached files the code needs; each is readable at "
            f"{WORK}/{INPUTS}/<its file name> (read-only).",
        },
    },
    "required": ["code"],
    "additionalProperties": False,
}


def spec_for(limits: SandboxLimits) -> ToolSpec:
    """The tool as the model sees it, with the limits it will run under."""
    description = (
        "Run Python code in a sandbox and get what it printed. Use it to compute, analyse data and make files. "
        "Each call starts fresh: nothing is kept between calls, so import and load again what you need. There "
        f"is no network. numpy and the server's other Python packages are installed. The working directory is {WORK}: "
        f"files written there come back listed with their sizes and ids; attached files are under {WORK}/{INPUTS}/. "
        f"Limits: {limits.wall_s:g} s wall clock, {limits.cpu_s} s CPU, {limits.memory_bytes // 2**20} MiB memory, "
        f"{limits.file_bytes // 2**20} MiB per file; long output is cut in the middle. A non-zero exit code or a "
        "traceback means the code failed: read the error, fix the code and run it again."
    )
    return ToolSpec(name=CODE_INTERPRETER, description=description, parameters=json.dumps(PARAMETERS, separators=(",", ":")))


class CodeInterpreterTool:
    """The built-in `code_interpreter`, shaped as a `ToolExecutor` that runs that one tool."""

    def __init__(
        self,
        *,
        sandbox: Sandbox | None = None,
        policy: ToolPolicy = DEFAULT_POLICY,
        limits_for: Callable[[Actor], SandboxLimits] | None = None,
        blobs: BlobStore | None = None,
        read_file: ReadFile | None = None,
        max_concurrent: int | None = None,  # sandboxes at once; more calls wait (within their timeout)
        violations: ViolationReporter | None = None,  # where escape attempts are reported (default: nowhere)
    ) -> None:
        self._sandbox = sandbox or Sandbox()
        self._policy = policy
        self._limits_for = limits_for or (lambda actor: SandboxLimits())
        self._blobs = blobs
        self._read_file = read_file
        self._slots = asyncio.Semaphore(max_concurrent or os.cpu_count() or 2)
        self._violations = violations or IgnoredViolations()
        self._problem: str | None = "code_interpreter has not started"

    async def start(self) -> None:
        try:
            await self._sandbox.probe()
        except SandboxUnavailable as error:
            self._problem = f"code_interpreter is disabled: {error}"
            logger.warning("%s", self._problem)
        else:
            self._problem = None

    async def close(self) -> None:
        pass  # every call's sandbox is gone when the call returns

    async def list_tools(self, *, actor: Actor) -> list[ToolSpec]:
        if self._problem is not None or not allowed(self._policy, actor):
            return []
        return [spec_for(self._limits_for(actor))]

    def unavailable(self, *, actor: Actor) -> dict[str, str]:
        if self._problem is None or not allowed(self._policy, actor):
            return {}
        return {CODE_INTERPRETER: self._problem}

    async def call(
        self, tool: str, arguments: dict, *, actor: Actor, idempotency_key: str, timeout_s: float
    ) -> ToolResult:
        started = time.monotonic()

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        if tool != CODE_INTERPRETER or not allowed(self._policy, actor):
            return ToolResult.failed(f"no tool named {tool!r} is available", duration_ms=elapsed_ms())
        if self._problem is not None:
            return ToolResult.unavailable(self._problem, duration_ms=elapsed_ms())
        code, file_ids, problem = _read(arguments)
        if problem:
            return ToolResult.failed(problem, duration_ms=elapsed_ms())
        try:
            async with asyncio.timeout(timeout_s):  # waiting for a slot counts in the call's time
                await self._slots.acquire()
        except TimeoutError:
            return ToolResult.timed_out(timeout_s, duration_ms=elapsed_ms())
        try:
            return await self._run(code, file_ids, actor=actor, deadline=started + timeout_s, timeout_s=timeout_s,
                                   elapsed_ms=elapsed_ms, idempotency_key=idempotency_key)
        finally:
            self._slots.release()

    async def _run(
        self, code: str, file_ids: tuple[str, ...], *, actor: Actor, deadline: float, timeout_s: float,
        elapsed_ms: Callable[[], int], idempotency_key: str,
    ) -> ToolResult:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                inputs, missing = await self._inputs(actor, file_ids)
        except TimeoutError:
            return ToolResult.timed_out(timeout_s, duration_ms=elapsed_ms())
        if missing:
            return ToolResult.failed(f"files: no file {missing!r} is available to this user", duration_ms=elapsed_ms())
        limits = self._limits_for(actor)
        wall_s = min(limits.wall_s, deadline - time.monotonic())
        if wall_s <= 0:
            return ToolResult.timed_out(timeout_s, duration_ms=elapsed_ms())
        try:
            outcome = await self._sandbox.run(code, limits=replace(limits, wall_s=wall_s), inputs=inputs)
            digests = await self._store(outcome, owner=subject_of(actor))
        except SandboxUnavailable as error:
            return ToolResult.unavailable(f"code_interpreter is disabled: {error}", duration_ms=elapsed_ms())
        except Exception as error:  # turnlog's side failed (a disk, the blob store): the model is told, briefly
            logger.exception("code_interpreter failed (idempotency key %s)", idempotency_key)
            return ToolResult.failed(f"the sandbox failed: {type(error).__name__}", duration_ms=elapsed_ms())
        if outcome.escape_attempted:
            await self._report_escape(actor, outcome, idempotency_key=idempotency_key)
        content = describe(outcome, digests=digests)
        result = ToolResult.completed if outcome.ok else ToolResult.failed
        return replace(
            result(content, duration_ms=elapsed_ms()),
            cpu_ms=round(outcome.cpu_s * 1000), memory_bytes=outcome.max_rss_bytes or None, exit_code=outcome.exit_code,
        )

    async def _report_escape(self, actor: Actor, outcome: SandboxOutcome, *, idempotency_key: str) -> None:
        """The caller's violation, for governance; a report that cannot be written is logged, the call still answers."""
        logger.warning("code_interpreter: call %s of user %s (org %s) %s", idempotency_key, actor.user_id, actor.org_id, outcome.stopped)
        try:
            await self._violations.report(
                actor=actor, kind=SANDBOX_ESCAPE, detail=f"call {idempotency_key}: {outcome.stopped}", by=f"tool:{CODE_INTERPRETER}"
            )
        except Exception:
            logger.exception("code_interpreter: the escape attempt of call %s could not be reported", idempotency_key)

    async def _inputs(self, actor: Actor, file_ids: tuple[str, ...]) -> tuple[dict[str, bytes], str]:
        """The attached files by their names under /work/inputs, or the id of one the actor may not read."""
        inputs: dict[str, bytes] = {}
        if file_ids and self._read_file is None:
            return inputs, file_ids[0]
        for file_id in dict.fromkeys(file_ids):
            found = await self._read_file(actor, file_id) if self._read_file else None
            if found is None:
                return inputs, file_id
            name, data = found
            inputs[input_name(name, file_id, taken=inputs.keys())] = data
        return inputs, ""

    async def _store(self, outcome: SandboxOutcome, *, owner: Subject | None) -> dict[str, str]:
        """Each returned file's blob digest, by its path under /work: sealed under the caller's key (docs/encryption.md)."""
        if self._blobs is None:
            return {}
        digests = {}
        for file in outcome.files:
            if file.data is not None:
                digests[file.path] = (await put_owned(self._blobs, file.data, owner=owner)).digest
        return digests


def describe(outcome: SandboxOutcome, *, digests: Mapping[str, str]) -> str:
    """The result as the model reads it: how it ended, what it printed, the files it wrote."""
    if outcome.exit_code is None:
        headline = outcome.stopped
    else:
        headline = f"exit code {outcome.exit_code}" + (f" ({outcome.stopped})" if outcome.stopped else "")
    sections = [f"{headline}, after {outcome.duration_s:.2f} s"]
    for name, text in (("stdout", outcome.stdout), ("stderr", outcome.stderr)):
        if text:
            sections.append(f"{name}:\n{text.rstrip()}")
    if not outcome.stdout and not outcome.stderr:
        sections.append("(nothing printed)")
    if outcome.files:
        lines = [f"files written in {WORK}:"]
        for file in outcome.files:
            line = f"- {file.path} ({file.size:,} bytes"
            if file.path in digests:
                line += f", file id sha256:{digests[file.path]})"
            elif file.data is None:
                line += ", not kept: over the limits on returned files)"
            else:
                line += ")"
            lines.append(line)
        sections.append("\n".join(lines))
    return "\n".join(sections)


_UNSAFE = re.compile(r"[^\w.()+,=@ -]")  # letters of any script stay; slashes, controls and quotes do not


def input_name(name: str, file_id: str, *, taken: Collection[str]) -> str:
    """A file name under /work/inputs for an attached file: its own, made safe, or with its id when taken."""
    candidate = _UNSAFE.sub("_", os.path.basename(name or "")).strip(" ") or _UNSAFE.sub("_", file_id)
    if candidate.strip(".") == "":
        candidate = _UNSAFE.sub("_", file_id) or "file"
    candidate = candidate[:200]
    if candidate in taken:
        candidate = f"{_UNSAFE.sub('_', file_id)[:50]}-{candidate}"
    return check_input_name(candidate)


def _read(arguments: Mapping[str, Any]) -> tuple[str, tuple[str, ...], str]:
    """The code and the file ids, or why the arguments cannot be used (the loop checked the schema; this holds without it)."""
    code = arguments.get("code")
    file_ids = arguments.get("files") or ()
    if not isinstance(code, str) or not code.strip():
        return "", (), "code: a non-empty string is required"
    if len(code) > MAX_CODE_CHARS:
        return "", (), f"code: at most {MAX_CODE_CHARS:,} characters"
    if not isinstance(file_ids, list | tuple) or not all(isinstance(file_id, str) and file_id for file_id in file_ids):
        return "", (), "files: must be a list of file ids"
    if len(file_ids) > MAX_FILES:
        return "", (), f"files: at most {MAX_FILES}"
    return code, tuple(file_ids), ""
