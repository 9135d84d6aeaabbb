"""`file_search` as a tool the model calls: the caller's documents searched for the model's own query.

The same search the prompt builder runs before the model (`processors/retrieval.py`), as the same
person: the call's actor gives the org, the workspace and the user, and nothing in the arguments can
widen that (`fileIds` only narrows it; the index applies the scope inside its queries). A result holds
the passages twice: as text (unnumbered, what `tool.result` and the analysts see) and as `Source`s,
which the next step numbers run-wide so the answer's `[n]` become citations
(`processors/tools/continuation.py`).
"""

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from events.values import ToolSpec
from kernel.envelope import Actor
from processors.grounding import numbered_sources, passages
from processors.retrieval import DocumentRetriever, scope_of
from processors.tools.catalog import ToolPolicy, ToolResult, allowed
from processors.tools.tools_file import BUILTIN_SERVER

logger = logging.getLogger(__name__)

FILE_SEARCH = "file_search"
# Offered to everyone whose workspace search would be allowed anyway, unless the tools file declares it
# (`[[tools]] server = "builtin" name = "file_search"`, with its own orgs, workspaces, timeout, ...).
DEFAULT_POLICY = ToolPolicy(server=BUILTIN_SERVER, name=FILE_SEARCH, idempotent=True, timeout_s=30.0)
# What a result's passages may take (embedding tokenizer), as the prompt builder's own search: under the
# runner's default cut of a result (2,000 tokens at about 4 characters each).
DEFAULT_PASSAGE_TOKENS = 1_500
NOTHING_FOUND = "No passage of the user's documents matches this query."

PARAMETERS: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "query": {
            "type": "string",
            "minLength": 1,
            "description": "What to look for: a question or the key words a passage that answers it would contain.",
        },
        "fileIds": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Only search these files (their ids, e.g. from the user's attachments). Leave it out to "
            "search every document in the workspace that the user may read.",
        },
    },
    "required": ["query"],
    "additionalProperties": False,
}
SPEC = ToolSpec(
    name=FILE_SEARCH,
    description=(
        "Search the user's uploaded documents in this workspace for passages relevant to a query. Each passage "
        "comes back numbered; after each statement that uses one, cite it with its number in square brackets, "
        "like [1]. When no passage holds the answer, say that the documents do not cover it."
    ),
    parameters=json.dumps(PARAMETERS, separators=(",", ":")),
)


class FileSearchTool:
    """The built-in `file_search`, shaped as a `ToolExecutor` that runs that one tool."""

    def __init__(self, *, retriever: DocumentRetriever, policy: ToolPolicy = DEFAULT_POLICY) -> None:
        self._retriever = retriever
        self._policy = policy
        self._max_tokens = policy.max_result_tokens or DEFAULT_PASSAGE_TOKENS

    async def start(self) -> None:
        pass  # the index is opened, and the embedding model loaded, by whoever owns them

    async def close(self) -> None:
        pass

    async def list_tools(self, *, actor: Actor) -> list[ToolSpec]:
        return [SPEC] if allowed(self._policy, actor) else []

    def unavailable(self, *, actor: Actor) -> dict[str, str]:
        return {}  # an index that fails says so in the call's result

    async def call(
        self, tool: str, arguments: dict, *, actor: Actor, idempotency_key: str, timeout_s: float
    ) -> ToolResult:
        started = time.monotonic()

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        if tool != FILE_SEARCH or not allowed(self._policy, actor):
            return ToolResult.failed(f"no tool named {tool!r} is available", duration_ms=elapsed_ms())
        query, file_ids, problem = _read(arguments)
        if problem:
            return ToolResult.failed(problem, duration_ms=elapsed_ms())
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                hits = await self._retriever.search(scope_of(actor, file_ids), query)
                sources = numbered_sources(hits, max_tokens=self._max_tokens, count_tokens=self._retriever.count_tokens)
        except Exception as error:  # the index is down: the model is told, and may answer without it
            if isinstance(error, TimeoutError) and deadline.expired():
                return ToolResult.timed_out(timeout_s, duration_ms=elapsed_ms())
            logger.exception("file_search failed (idempotency key %s)", idempotency_key)
            return ToolResult.failed(f"the document search failed: {type(error).__name__}", duration_ms=elapsed_ms())
        content = passages(sources, numbered=False) if sources else NOTHING_FOUND
        return ToolResult.completed(content, duration_ms=elapsed_ms(), sources=sources)


def _read(arguments: Mapping[str, Any]) -> tuple[str, tuple[str, ...], str]:
    """The query and the files, or why the arguments cannot be used (the loop checked the schema; this holds without it)."""
    query = arguments.get("query")
    file_ids = arguments.get("fileIds") or ()
    if not isinstance(query, str) or not query.strip():
        return "", (), "query: a non-empty string is required"
    if not isinstance(file_ids, list | tuple) or not all(isinstance(file_id, str) for file_id in file_ids):
        return "", (), "fileIds: must be a list of file ids"
    return query, tuple(file_ids), ""
