"""`web_search` as a tool the model calls: a web search, then the top pages read and quoted, as numbered sources.

The query goes to a `SearchEngine` (SearXNG in production, `processors/tools/web/searxng.py`); the top
`max_results` hits (default `max_pages`) are read at once by the `PageFetcher` (SSRF rules, redirects
checked hop by hop, a timeout and a byte cap per page, turnlog's own HTML extraction), each within the
time the call has left. From each page the passage that shares the most words with the query is quoted
(`processors/tools/web/excerpts.py`). A page that could not be read is listed with the reason; the
engine's snippet of it stands in when there is one. The passages come back as `Source`s (file id: the
page's URL; chunk id: `URL#<passage index>`; location: the URL), which the next step numbers run-wide
so the answer's `[n]` become citations, exactly as `file_search`'s do. A call never raises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from events.values import Source, ToolSpec
from kernel.envelope import Actor
from processors.tools.catalog import ToolPolicy, ToolResult, allowed
from processors.tools.tools_file import BUILTIN_SERVER
from processors.tools.web.excerpts import Passage, best_passage
from processors.tools.web.fetching import FetchedPage, PageFetcher, PageUnread
from processors.tools.web.search import SearchEngine, SearchFailed, SearchHit
from processors.tools.web.settings import MAX_RESULTS, WebSearchSettings

logger = logging.getLogger(__name__)

WEB_SEARCH = "web_search"
# Offered only where the tools file has a `[web_search]` table (reading the web on a user's behalf is the
# operator's choice); `[[tools]] server = "builtin" name = "web_search"` replaces this policy. Read-only: retries are safe.
DEFAULT_POLICY = ToolPolicy(server=BUILTIN_SERVER, name=WEB_SEARCH, idempotent=True, timeout_s=30.0)
NOTHING_FOUND = "The web search found no result for this query."

PARAMETERS: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "query": {
            "type": "string",
            "minLength": 1,
            "maxLength": 400,
            "description": "What to search the web for, as you would type it into a search engine: the key words, "
            "names and dates, not a whole sentence.",
        },
        "max_results": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_RESULTS,
            "description": "How many of the top results to read (default 3). Fewer is faster.",
        },
    },
    "required": ["query"],
    "additionalProperties": False,
}
SPEC = ToolSpec(
    name=WEB_SEARCH,
    description=(
        "Search the web and read the top pages. Use it for recent events and for facts that neither the "
        "conversation nor the user's documents hold. Each result comes back numbered, with the page's title, its "
        "URL and a passage quoted from it; after each statement that uses one, cite it with its number in square "
        "brackets, like [1]. Pages that could not be read are listed with the reason. When no result holds the "
        "answer, say so rather than guess."
    ),
    parameters=json.dumps(PARAMETERS, separators=(",", ":")),
)


@dataclass(frozen=True, kw_only=True)
class PageReading:
    """One hit and what reading its page came to: a passage from the page, or why there is none."""

    hit: SearchHit
    page: FetchedPage | None = None
    passage: Passage | None = None
    failure: str = ""


class WebSearchTool:
    """The built-in `web_search`, shaped as a `ToolExecutor` that runs that one tool.

    It closes the engine and the fetcher it is given (by default one built from `settings`).
    """

    def __init__(
        self,
        *,
        engine: SearchEngine,
        settings: WebSearchSettings,
        policy: ToolPolicy = DEFAULT_POLICY,
        fetcher: PageFetcher | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._policy = policy
        self._fetcher = fetcher or settings.fetcher()

    async def start(self) -> None:
        pass  # nothing to open: connections are made by the calls

    async def close(self) -> None:
        await asyncio.gather(self._engine.close(), self._fetcher.close())

    async def list_tools(self, *, actor: Actor) -> list[ToolSpec]:
        return [SPEC] if allowed(self._policy, actor) else []

    def unavailable(self, *, actor: Actor) -> dict[str, str]:
        return {}  # an engine that is down says so in the call's result

    async def call(
        self, tool: str, arguments: dict, *, actor: Actor, idempotency_key: str, timeout_s: float
    ) -> ToolResult:
        started = time.monotonic()

        def elapsed_ms() -> int:
            return int((time.monotonic() - started) * 1000)

        if tool != WEB_SEARCH or not allowed(self._policy, actor):
            return ToolResult.failed(f"no tool named {tool!r} is available", duration_ms=elapsed_ms())
        query, count, problem = _read(arguments, default=self._settings.max_pages)
        if problem:
            return ToolResult.failed(problem, duration_ms=elapsed_ms())
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                hits = (await self._engine.search(query, limit=count))[:count]
                readings = await self._read_pages(hits, query, ends_at=started + timeout_s, timeout_s=timeout_s)
        except SearchFailed as error:
            if not error.reached:
                return ToolResult.unavailable(f"the web search is unavailable: {error.reason}", duration_ms=elapsed_ms())
            return ToolResult.failed(f"the web search failed: {error.reason}", duration_ms=elapsed_ms())
        except Exception as error:  # a bug, or an engine adapter that broke its contract: the model is told
            if isinstance(error, TimeoutError) and deadline.expired():
                return ToolResult.timed_out(timeout_s, duration_ms=elapsed_ms())
            logger.exception("web_search failed (idempotency key %s)", idempotency_key)
            return ToolResult.failed(f"the web search failed: {type(error).__name__}", duration_ms=elapsed_ms())
        if not readings:
            return ToolResult.completed(NOTHING_FOUND, duration_ms=elapsed_ms())
        content, sources = results_of(readings)
        return ToolResult.completed(content, duration_ms=elapsed_ms(), sources=sources)

    async def _read_pages(self, hits: Sequence[SearchHit], query: str, *, ends_at: float, timeout_s: float) -> list[PageReading]:
        """Every hit's page read at once, each within the page timeout and the time the call has left."""
        # Some of the call's time is kept for the result: a page still loading then is given up, not the call.
        reserve_s = min(1.0, timeout_s / 10)
        budget_s = min(self._settings.page_timeout_s, ends_at - reserve_s - time.monotonic())
        if budget_s <= 0.05:
            return [PageReading(hit=hit, failure="not read: the call had no time left") for hit in hits]
        return list(await asyncio.gather(*(self._read_page(hit, query, budget_s) for hit in hits)))

    async def _read_page(self, hit: SearchHit, query: str, budget_s: float) -> PageReading:
        try:
            page = await self._fetcher.fetch(hit.url, timeout_s=budget_s)
        except PageUnread as error:
            return PageReading(hit=hit, failure=error.reason)
        except Exception as error:  # never let one page fail the call
            logger.exception("web_search could not read %s", hit.url)
            return PageReading(hit=hit, failure=f"failed: {type(error).__name__}")
        passage = best_passage(page.paragraphs, query, max_chars=self._settings.passage_chars)
        if passage is None:
            return PageReading(hit=hit, page=page, failure="no text on the page")
        return PageReading(hit=hit, page=page, passage=passage)


def results_of(readings: Sequence[PageReading]) -> tuple[str, tuple[Source, ...]]:
    """The result's text (`[n] title (url)` then the passage, for each page; unread pages and why) and its sources."""
    blocks: list[str] = []
    unread: list[str] = []
    sources: list[Source] = []
    for reading in readings:
        hit, page, passage = reading.hit, reading.page, reading.passage
        if page is not None and passage is not None:
            source = Source(
                marker=len(sources) + 1,
                file_id=page.url,
                chunk_id=f"{page.url}#{passage.index}",
                title=page.title or hit.title,
                location=page.url,
                text=passage.text,
            )
            blocks.append(f"[{source.marker}] {source.title} ({source.location})\n{source.text}")
        elif hit.snippet:
            source = Source(
                marker=len(sources) + 1,
                file_id=hit.url,
                chunk_id=f"{hit.url}#snippet",
                title=hit.title,
                location=hit.url,
                text=hit.snippet,
            )
            blocks.append(
                f"[{source.marker}] {source.title} ({source.location})\n"
                f"(page not read: {reading.failure}; the search engine's snippet)\n{source.text}"
            )
        else:
            unread.append(f"- {hit.title} ({hit.url}): {reading.failure}")
            continue
        sources.append(source)
    if unread:
        blocks.append("Not read, and nothing to quote:\n" + "\n".join(unread))
    return "\n\n".join(blocks), tuple(sources)


def _read(arguments: Mapping[str, Any], *, default: int) -> tuple[str, int, str]:
    """The query and how many results to read, or why the arguments cannot be used (the loop checked the schema)."""
    query = arguments.get("query")
    count = arguments.get("max_results", default)
    if not isinstance(query, str) or not query.strip():
        return "", 0, "query: a non-empty string is required"
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_RESULTS:
        return "", 0, f"max_results: must be an integer from 1 to {MAX_RESULTS}"
    return " ".join(query.split()), count, ""
