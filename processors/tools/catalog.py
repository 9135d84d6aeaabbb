"""The tool port: what each tool may do and for whom (`ToolPolicy`), a call's `ToolResult`, and `ToolExecutor`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from events.values import Source, ToolSpec
from kernel.envelope import Actor

ToolStatus = Literal["completed", "failed", "timed_out", "unavailable"]
TOOL_STATUSES: tuple[ToolStatus, ...] = get_args(ToolStatus)

DEFAULT_TIMEOUT_S = 30.0
# The model sees the tool under this name, so it must suit every chat API's function names (OpenAI's rule).
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
SERVER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# No tokenizer is at hand where results arrive; English text runs about 4 characters a token.
CHARS_PER_TOKEN = 4


class DeclarationError(ValueError):
    """A tool or server declaration that cannot be used; `field` names the key at fault, e.g. `timeout_s`."""

    def __init__(self, *, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


@dataclass(frozen=True, kw_only=True)
class ToolPolicy:
    """One tool a server offers, as declared: who may use it and how a call to it is run."""

    server: str
    name: str  # the MCP tool's name, which is also the name the model calls it by
    orgs: tuple[str, ...] = ()  # the orgs whose members may use it; empty: every org
    workspaces: tuple[str, ...] = ()  # the workspaces it may be used in; empty: every workspace
    timeout_s: float = DEFAULT_TIMEOUT_S  # a call is abandoned (and cancelled at the tool) after this long
    idempotent: bool = False  # calling it twice with the same arguments does no more than once: safe to retry
    require_approval: bool = False  # a person approves each call before it runs
    long: bool = False  # long work: the run should not wait on it interactively
    max_result_tokens: int | None = None  # a longer result is cut to this size (`clip`) before the model sees it

    def __post_init__(self) -> None:
        if not SERVER_NAME.fullmatch(self.server):
            raise DeclarationError(field="server", problem=f"{self.server!r} is not a server name")
        if not TOOL_NAME.fullmatch(self.name):
            raise DeclarationError(
                field="name", problem=f"{self.name!r}: a tool name is 1-64 of A-Z, a-z, 0-9, '_' and '-'"
            )
        for field_name in ("orgs", "workspaces"):
            if any(not entry for entry in getattr(self, field_name)):
                raise DeclarationError(field=field_name, problem="ids must not be empty")
        if not math.isfinite(self.timeout_s) or self.timeout_s <= 0:
            raise DeclarationError(field="timeout_s", problem=f"must be a finite number > 0, got {self.timeout_s}")
        if self.max_result_tokens is not None and self.max_result_tokens < 1:
            raise DeclarationError(field="max_result_tokens", problem=f"must be >= 1, got {self.max_result_tokens}")


def allowed(tool: ToolPolicy, actor: Actor) -> bool:
    """Whether `actor` may use `tool`: its org and its workspace must both be admitted (empty lists admit all)."""
    org_ok = not tool.orgs or actor.org_id in tool.orgs
    workspace_ok = not tool.workspaces or actor.workspace_id in tool.workspaces
    return org_ok and workspace_ok


@dataclass(frozen=True, kw_only=True)
class ToolResult:
    """What one call came to; `content` is the text the model sees (the result, the error, or why it did not run).

    `completed`: the tool ran and answered. `failed`: the tool reported an error, the server refused the call,
    or the connection broke during it (so it may have run). `timed_out`: abandoned at the deadline and
    cancelled at the tool (it may have partly run). `unavailable`: the call never reached the tool (its
    server could not be reached, or is not configured), so retrying it later is safe. `sources`: the
    passages a completed result holds (`file_search`), which the next step numbers so the answer can cite them.
    """

    status: ToolStatus
    content: str
    is_error: bool
    duration_ms: int
    sources: tuple[Source, ...] = ()
    # What the call used, where the tool measures it (code_interpreter's sandbox): recorded, never shown to the model.
    cpu_ms: int | None = None
    memory_bytes: int | None = None
    exit_code: int | None = None

    def __post_init__(self) -> None:
        if self.status not in TOOL_STATUSES:
            raise ValueError(f"unknown tool status {self.status!r}; statuses are {', '.join(TOOL_STATUSES)}")
        if self.is_error != (self.status != "completed"):
            raise ValueError(f"is_error must be {self.status != 'completed'} for status {self.status!r}")

    @classmethod
    def completed(cls, content: str, *, duration_ms: int, sources: tuple[Source, ...] = ()) -> ToolResult:
        return cls(status="completed", content=content, is_error=False, duration_ms=duration_ms, sources=sources)

    @classmethod
    def failed(cls, content: str, *, duration_ms: int) -> ToolResult:
        return cls(status="failed", content=content, is_error=True, duration_ms=duration_ms)

    @classmethod
    def timed_out(cls, timeout_s: float, *, duration_ms: int) -> ToolResult:
        return cls(status="timed_out", content=f"timed out after {timeout_s:g} s", is_error=True, duration_ms=duration_ms)

    @classmethod
    def unavailable(cls, reason: str, *, duration_ms: int) -> ToolResult:
        return cls(status="unavailable", content=reason, is_error=True, duration_ms=duration_ms)


def clip(text: str, max_tokens: int | None) -> str:
    """`text`, cut to about `max_tokens` tokens with a note saying so; unchanged when it fits or there is no limit."""
    if max_tokens is None or len(text) <= max_tokens * CHARS_PER_TOKEN:
        return text
    return f"{text[: max_tokens * CHARS_PER_TOKEN]}\n[truncated: the result was longer than {max_tokens} tokens]"


class ToolExecutor(Protocol):
    """Runs the declared tools for a caller: lists those the caller may use and calls one within a deadline."""

    async def start(self) -> None:
        """Ready to list and call; a server that cannot be reached now does not stop it (its tools are unavailable)."""
        ...

    async def close(self) -> None:
        """Ends every session and server process it opened."""
        ...

    async def list_tools(self, *, actor: Actor) -> list[ToolSpec]:
        """The declared tools `actor` may use that their servers offer now, in the tools file's order."""
        ...

    def unavailable(self, *, actor: Actor) -> dict[str, str]:
        """Tools `actor` may use that the latest attempt found unavailable, each with the reason (no I/O)."""
        ...

    async def call(
        self, tool: str, arguments: dict, *, actor: Actor, idempotency_key: str, timeout_s: float
    ) -> ToolResult:
        """Runs `tool` with `actor`'s credentials; never raises for the tool's or its server's failures.

        After `timeout_s` (the whole call, connecting included; normally the tool's own `timeout_s`) the
        call is abandoned, cancelled at the tool, and reported `timed_out`. A tool `actor` may not use
        answers `failed`, as if it did not exist. The content is whole: the caller cuts it (`clip`).
        """
        ...
