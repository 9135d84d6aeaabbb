"""`web_search` end to end against the local search service: SearXNG's JSON API, then the pages read over loopback
(allowed explicitly, as a tools file's `allow_hosts` would), quoted as sources the answer cites `[n]`."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema
import pytest

from kernel.envelope import Actor
from processors.ingestion.extraction.dispatch import extract
from processors.ingestion.extraction.document import MediaType
from processors.tools.catalog import DeclarationError, ToolPolicy
from processors.tools.tools_file import BUILTIN_SERVER
from processors.tools.web.search import SearchHit
from processors.tools.web.searxng import SearxngSearch
from processors.tools.web.settings import WebSearchSettings
from processors.tools.web_search import NOTHING_FOUND, PARAMETERS, SPEC, WEB_SEARCH, WebSearchTool

ANA = Actor(user_id="ana", org_id="acme", workspace_id="research")
GUS = Actor(user_id="gus", org_id="globex", workspace_id="research")
FIXTURES = Path(__file__).with_name("fixtures")


def settings_for(service, **overrides) -> WebSearchSettings:
    options = {"searxng_url": service.base_url, "search_timeout_s": 30.0, "page_timeout_s": 30.0, "allow_hosts": ("127.0.0.1",)}
    return WebSearchSettings(**{**options, **overrides})


@pytest.fixture
async def web_search(search_service) -> AsyncIterator[WebSearchTool]:
    settings = settings_for(search_service)
    tool = WebSearchTool(engine=SearxngSearch(base_url=settings.searxng_url, timeout_s=30.0), settings=settings)
    await tool.start()
    try:
        yield tool
    finally:
        await tool.close()


async def call(tool: WebSearchTool, arguments: dict, *, actor: Actor = ANA, timeout_s: float = 60.0):
    return await tool.call(WEB_SEARCH, arguments, actor=actor, idempotency_key="run_1:call_1", timeout_s=timeout_s)


def page_paragraphs(name: str) -> list[str]:
    document = extract((FIXTURES / name).read_bytes(), MediaType.HTML)
    return [paragraph for section in document.sections for paragraph in section.text.split("\n\n")]


async def test_results_become_sources_that_quote_the_pages(web_search: WebSearchTool, search_service) -> None:
    result = await call(web_search, {"query": "why does the moon cause tides", "max_results": 4})
    base = search_service.base_url
    assert result.status == "completed", result.content
    tides, eclipses, apollo, mirror = result.sources
    assert [source.marker for source in result.sources] == [1, 2, 3, 4]

    # A page read: its URL, its own title, and a passage quoted from it, the one about the question.
    assert (tides.file_id, tides.location, tides.title) == (f"{base}/pages/tides.html", f"{base}/pages/tides.html", "Why the sea has two tides a day")
    assert tides.chunk_id.startswith(f"{base}/pages/tides.html#")
    assert tides.text.startswith("Tides are caused mainly by the gravity of the moon.")
    assert all(paragraph in page_paragraphs("tides.html") for paragraph in tides.text.split("\n\n"))  # quoted, word for word
    assert len(tides.text) <= 800
    assert eclipses.title == "Solar and lunar eclipses explained" and eclipses.text.split("\n\n")[0] in page_paragraphs("eclipses.html")
    assert apollo.title == "Apollo 11: the first moon landing"

    # A result on a host the tools file does not allow (localhost is loopback too): refused, its snippet stands in.
    assert mirror.file_id == f"http://localhost:{search_service.port}/pages/tides.html"
    assert mirror.chunk_id == f"{mirror.file_id}#snippet"
    assert mirror.text == "A mirror of the tide tables and their tides."

    blocks = result.content.split("\n\n")
    assert blocks[0] == f"[1] Why the sea has two tides a day ({base}/pages/tides.html)\n{tides.text.split(chr(10) * 2)[0]}"
    assert (
        f"[4] Tide tables mirror ({mirror.file_id})\n"
        "(page not read: refused: localhost is 127.0.0.1, a loopback address; the search engine's snippet)\n"
        "A mirror of the tide tables and their tides."
    ) in result.content


async def test_without_the_allowance_every_loopback_page_is_refused_and_snippets_stand_in(search_service) -> None:
    settings = settings_for(search_service, allow_hosts=())
    tool = WebSearchTool(engine=SearxngSearch(base_url=settings.searxng_url, timeout_s=30.0), settings=settings)
    try:
        result = await call(tool, {"query": "moon"})
    finally:
        await tool.close()
    assert result.status == "completed"
    assert [source.chunk_id.rsplit("#", 1)[1] for source in result.sources] == ["snippet"] * 3  # max_pages by default
    assert result.content.count("refused: 127.0.0.1, a loopback address") == 3


async def test_the_model_may_ask_for_fewer_pages_and_nothing_found_is_said(web_search: WebSearchTool) -> None:
    result = await call(web_search, {"query": "moon", "max_results": 1})
    assert [source.title for source in result.sources] == ["Why the sea has two tides a day"]
    nothing = await call(web_search, {"query": "zyzzyva quixotic"})
    assert (nothing.status, nothing.content, nothing.sources) == ("completed", NOTHING_FOUND, ())


class ScriptedEngine:
    """A search engine that answers given hits, or never answers."""

    def __init__(self, hits: list[SearchHit] | None) -> None:
        self.hits = hits

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        if self.hits is None:
            await asyncio.Event().wait()
        return (self.hits or [])[:limit]

    async def close(self) -> None:
        pass


async def test_a_page_slower_than_the_call_is_given_up_and_the_others_still_answer(search_service) -> None:
    base = search_service.base_url
    engine = ScriptedEngine(
        [
            SearchHit(url=f"{base}/stall", title="A page that never answers", snippet="Its snippet says the moon is far."),
            SearchHit(url=f"{base}/pages/apollo.html", title="Apollo 11", snippet=""),
            SearchHit(url=f"{base}/binary", title="Not a page", snippet=""),
        ]
    )
    # The pages may take 30 s each, but the call has 4 s: they get what is left of it, less a reserve for the result.
    tool = WebSearchTool(engine=engine, settings=settings_for(search_service))
    started = time.monotonic()
    try:
        result = await call(tool, {"query": "who landed on the moon"}, timeout_s=4.0)
    finally:
        await tool.close()
    assert time.monotonic() - started < 4.0
    assert result.status == "completed"
    stalled, apollo = result.sources
    assert stalled.text == "Its snippet says the moon is far."
    assert re.search(r"\(page not read: timed out after [0-3](\.\d+)? s; the search engine's snippet\)", result.content)
    assert "Neil Armstrong and Buzz Aldrin landed the lunar module Eagle" in apollo.text
    assert result.content.endswith(f"Not read, and nothing to quote:\n- Not a page ({base}/binary): not a web page or text (application/octet-stream)")


async def test_a_search_that_outlasts_the_call_times_out(search_service) -> None:
    tool = WebSearchTool(engine=ScriptedEngine(None), settings=settings_for(search_service))
    result = await call(tool, {"query": "moon"}, timeout_s=0.5)
    await tool.close()
    assert (result.status, result.content) == ("timed_out", "timed out after 0.5 s")


async def test_an_engine_that_is_down_is_unavailable_and_one_that_fails_is_failed(search_service) -> None:
    settings = settings_for(search_service)
    down = WebSearchTool(engine=SearxngSearch(base_url="http://127.0.0.1:1", timeout_s=30.0), settings=settings)
    result = await call(down, {"query": "moon"})
    await down.close()
    assert result.status == "unavailable" and result.content.startswith("the web search is unavailable: SearXNG at http://127.0.0.1:1 cannot be reached")

    wrong = WebSearchTool(engine=SearxngSearch(base_url=f"{search_service.base_url}/status/500", timeout_s=30.0), settings=settings)
    result = await call(wrong, {"query": "moon"})
    await wrong.close()
    assert (result.status, result.content) == ("failed", "the web search failed: SearXNG answered HTTP 404")


async def test_arguments_the_tool_cannot_use_fail_without_a_search(web_search: WebSearchTool) -> None:
    for arguments, problem in [
        ({}, "query: a non-empty string is required"),
        ({"query": "  "}, "query: a non-empty string is required"),
        ({"query": "moon", "max_results": 6}, "max_results: must be an integer from 1 to 5"),
        ({"query": "moon", "max_results": True}, "max_results: must be an integer from 1 to 5"),
    ]:
        result = await call(web_search, arguments)
        assert (result.status, result.content) == ("failed", problem)


async def test_the_tool_is_offered_and_run_only_for_those_its_policy_admits(search_service) -> None:
    settings = settings_for(search_service)
    policy = ToolPolicy(server=BUILTIN_SERVER, name=WEB_SEARCH, orgs=("acme",))
    tool = WebSearchTool(engine=SearxngSearch(base_url=settings.searxng_url), settings=settings, policy=policy)
    try:
        assert await tool.list_tools(actor=ANA) == [SPEC]
        assert await tool.list_tools(actor=GUS) == []
        refused = await call(tool, {"query": "moon"}, actor=GUS)
        assert (refused.status, refused.content) == ("failed", "no tool named 'web_search' is available")
        other = await tool.call("file_search", {"query": "moon"}, actor=ANA, idempotency_key="k", timeout_s=5.0)
        assert other.status == "failed"
        assert tool.unavailable(actor=ANA) == {}
    finally:
        await tool.close()


def test_the_spec_is_a_json_schema_the_model_can_follow() -> None:
    schema = json.loads(SPEC.parameters)
    assert schema == PARAMETERS
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate({"query": "moon landing date", "max_results": 2}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"query": "moon", "max_results": 9}, schema)
    assert "[1]" in SPEC.description


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"searxng_url": "searxng:8080"}, "searxng_url"),
        ({"max_pages": 6}, "max_pages"),
        ({"page_timeout_s": 0}, "page_timeout_s"),
        ({"search_timeout_s": float("inf")}, "search_timeout_s"),
        ({"max_page_bytes": 10}, "max_page_bytes"),
        ({"max_redirects": -1}, "max_redirects"),
        ({"passage_chars": 5}, "passage_chars"),
        ({"allow_hosts": ("ok.example", "not a host")}, "allow_hosts[1]"),
    ],
)
def test_settings_name_the_key_at_fault(overrides: dict, field: str) -> None:
    with pytest.raises(DeclarationError) as error:
        WebSearchSettings(**{"searxng_url": "http://searxng:8080", **overrides})
    assert error.value.field == field
