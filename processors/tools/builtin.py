"""turnlog's own tools beside the MCP servers': one `ToolExecutor` that routes each call by its tool's name.

Built-in tools (`file_search`, `web_search`, `code_interpreter`) run in the process; every other tool goes to the servers' executor.
A built-in tool's name is reserved in the tools file, so no server's tool can shadow it or be shadowed.
"""

import asyncio
from collections.abc import Mapping

from events.values import ToolSpec
from kernel.envelope import Actor
from processors.retrieval import DocumentRetriever
from processors.tools.catalog import ToolExecutor, ToolPolicy, ToolResult
from processors.tools.file_search import DEFAULT_POLICY, FILE_SEARCH, FileSearchTool
from commands.governance.violations import ViolationReporter
from events.blobs import BlobStore
from processors.tools.attached_files import AttachedFiles
from processors.tools.code_interpreter import CODE_INTERPRETER, CodeInterpreterTool
from processors.tools.code_interpreter_settings import CodeInterpreterSettings
from processors.tools.tools_file import ToolsConfig
from processors.tools.web.search import SearchEngine
from processors.tools.web_search import WEB_SEARCH, WebSearchTool


class ToolRouter:
    """Each built-in tool to its own executor, everything else to `servers`; listings and outages merged."""

    def __init__(self, *, builtin: Mapping[str, ToolExecutor], servers: ToolExecutor) -> None:
        self._builtin = dict(builtin)
        self._servers = servers

    @property
    def _executors(self) -> list[ToolExecutor]:
        return [self._servers, *dict.fromkeys(self._builtin.values())]

    async def start(self) -> None:
        for executor in self._executors:
            await executor.start()

    async def close(self) -> None:
        await asyncio.gather(*(executor.close() for executor in self._executors))

    async def list_tools(self, *, actor: Actor) -> list[ToolSpec]:
        listings = await asyncio.gather(*(executor.list_tools(actor=actor) for executor in self._executors))
        return [spec for listing in listings for spec in listing]

    def unavailable(self, *, actor: Actor) -> dict[str, str]:
        reasons: dict[str, str] = {}
        for executor in self._executors:
            reasons.update(executor.unavailable(actor=actor))
        return reasons

    async def call(
        self, tool: str, arguments: dict, *, actor: Actor, idempotency_key: str, timeout_s: float
    ) -> ToolResult:
        executor = self._builtin.get(tool, self._servers)
        return await executor.call(tool, arguments, actor=actor, idempotency_key=idempotency_key, timeout_s=timeout_s)


def with_builtin_tools(
    config: ToolsConfig,
    *,
    servers: ToolExecutor,
    retriever: DocumentRetriever | None,
    web_search: SearchEngine | None = None,
    blobs: BlobStore | None = None,
    files: AttachedFiles | None = None,
    violations: ViolationReporter | None = None,
) -> ToolExecutor:
    """`servers` with turnlog's own tools beside it: `file_search` where there is a document search;
    `web_search` where the tools file enables it (on `web_search`, the search engine the composition root
    chose); `code_interpreter` where the tools file enables it (the files it writes go to `blobs`, the files
    a call names are read from `files`, as the caller sees them, and escape attempts are reported to `violations`)."""
    builtin: dict[str, ToolExecutor] = {}
    if retriever is not None:
        builtin[FILE_SEARCH] = FileSearchTool(retriever=retriever, policy=file_search_policy(config))
    declared = config.tool(WEB_SEARCH)
    if config.web_search is not None and declared is not None and web_search is not None:
        builtin[WEB_SEARCH] = WebSearchTool(engine=web_search, settings=config.web_search, policy=declared)
    declared = config.tool(CODE_INTERPRETER)
    if declared is not None:
        settings = config.code_interpreter or CodeInterpreterSettings()
        builtin[CODE_INTERPRETER] = CodeInterpreterTool(
            policy=declared, limits_for=settings.limits_for, blobs=blobs, read_file=files.read if files is not None else None,
            violations=violations,
        )
    return ToolRouter(builtin=builtin, servers=servers) if builtin else servers


def tool_policies(config: ToolsConfig, *, searches: bool) -> dict[str, ToolPolicy]:
    """Every tool's policy by name: the tools file's, and `file_search`'s default where it searches and the file is silent."""
    policies = {tool.name: tool for tool in config.tools}
    if searches:
        policies.setdefault(FILE_SEARCH, DEFAULT_POLICY)
    return policies


def file_search_policy(config: ToolsConfig) -> ToolPolicy:
    """The tools file's declaration of `file_search` (`server = "builtin"`), or the default one."""
    return config.tool(FILE_SEARCH) or DEFAULT_POLICY
