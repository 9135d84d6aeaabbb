"""The SearXNG adapter: against the local service's copy of SearXNG's JSON API, and every way an instance can fail."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from processors.tools.web.search import SearchFailed, SearchHit
from processors.tools.web.searxng import SearxngSearch, hits_of


async def test_hits_come_best_first_cut_to_the_limit(search_service) -> None:
    engine = SearxngSearch(base_url=search_service.base_url + "/", timeout_s=30.0)
    try:
        hits = await engine.search("moon tides", limit=2)
        everything = await engine.search("moon tides", limit=10)
    finally:
        await engine.close()
    assert hits == [
        SearchHit(
            url=f"{search_service.base_url}/pages/tides.html",
            title="Why the sea has two tides a day",
            snippet="Tides are caused mainly by the gravity of the moon, which raises two bulges of water.",
        ),
        SearchHit(
            url=f"{search_service.base_url}/pages/eclipses.html",
            title="Solar and lunar eclipses explained",
            snippet="An eclipse happens when the sun, the Earth and the moon line up.",
        ),
    ]
    assert [hit.url for hit in everything][-1] == f"http://localhost:{search_service.port}/pages/tides.html"


async def test_no_result_is_an_empty_list_and_failed_engines_are_a_failure(search_service) -> None:
    engine = SearxngSearch(base_url=search_service.base_url, timeout_s=30.0)
    try:
        assert await engine.search("zyzzyva quixotic", limit=3) == []
        with pytest.raises(SearchFailed, match=r"engines failed: google \(timeout\), duckduckgo \(CAPTCHA\)"):
            await engine.search("!unresponsive", limit=3)
    finally:
        await engine.close()


def answering(status: int, body: bytes = b"", content_type: str = "application/json") -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body, headers={"content-type": content_type}))


@pytest.mark.parametrize(
    ("transport", "reason"),
    [
        (answering(403, b"Forbidden", "text/plain"), "SearXNG refused format=json (403): list json under `search: formats:`"),
        (answering(429, b"Too Many Requests", "text/plain"), "SearXNG rate-limited the search (429): turn `server: limiter:` off"),
        (answering(502, b"Bad Gateway", "text/plain"), "SearXNG answered HTTP 502"),
        (answering(200, b"<html>not json</html>", "text/html"), "SearXNG's answer is not JSON"),
        (answering(200, b'{"query": "q"}'), "SearXNG's answer has no `results` list"),
    ],
    ids=["json-not-enabled", "limiter-on", "bad-gateway", "not-json", "no-results-list"],
)
async def test_an_instance_that_answers_wrongly_fails_with_a_reason_that_says_what_to_fix(
    transport: httpx.MockTransport, reason: str
) -> None:
    engine = SearxngSearch(base_url="http://searxng:8080", transport=transport)
    with pytest.raises(SearchFailed) as failed:
        await engine.search("moon", limit=3)
    await engine.close()
    assert failed.value.reason.startswith(reason)
    assert failed.value.reached


@pytest.fixture
def dead_url() -> Iterator[str]:
    """An address where nothing listens: the port is held (bound, never listening), so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


async def test_an_instance_that_cannot_be_reached_is_reported_as_never_reached(dead_url: str) -> None:
    engine = SearxngSearch(base_url=dead_url, timeout_s=30.0)
    with pytest.raises(SearchFailed) as failed:
        await engine.search("moon", limit=3)
    await engine.close()
    assert not failed.value.reached
    assert failed.value.reason.startswith(f"SearXNG at {dead_url} cannot be reached")


def test_results_without_an_http_url_or_seen_before_are_skipped_and_titles_fall_back_to_the_url() -> None:
    answer = {
        "results": [
            {"url": "javascript:alert(1)", "title": "x"},
            {"url": "https://a.example/", "title": "  A \n page ", "content": " one\n two "},
            {"url": "https://a.example/", "title": "A again"},
            {"url": "https://b.example/", "title": "", "content": None},
            "not a result",
            {"url": "https://c.example/", "title": "C"},
        ]
    }
    assert hits_of(answer, limit=5) == [
        SearchHit(url="https://a.example/", title="A page", snippet="one two"),
        SearchHit(url="https://b.example/", title="https://b.example/", snippet=""),
        SearchHit(url="https://c.example/", title="C", snippet=""),
    ]
    assert len(hits_of(answer, limit=1)) == 1


def test_the_instance_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="must be http"):
        SearxngSearch(base_url="searxng:8080")
