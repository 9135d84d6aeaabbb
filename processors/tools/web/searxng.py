"""The web search port over SearXNG's JSON API: `GET /search?q=...&format=json` on a self-hosted instance.

SearXNG answers `{"query", "number_of_results", "results": [{"url", "title", "content", "engine", ...}],
"answers", "suggestions", "unresponsive_engines": [[engine, error], ...], ...}`, its results already
merged and ranked across its engines. It serves JSON only when its `settings.yml` lists `json` under
`search: formats:` (otherwise 403), and its limiter (`server: limiter:`) must be off for a client that
is a server (otherwise 429s): `deploy/searxng/settings.yml` sets both. It takes no result count: the
first page is cut to `limit` here.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from processors.tools.web.search import SearchFailed, SearchHit

DEFAULT_TIMEOUT_S = 10.0


class SearxngSearch:
    """Searches a SearXNG instance at `base_url` (e.g. `http://searxng:8080`); hits best first, at most `limit`."""

    def __init__(
        self,
        *,
        base_url: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        categories: str = "general",
        language: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the SearXNG URL must be http(s), got {base_url!r}")
        if not math.isfinite(timeout_s) or timeout_s <= 0:
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s}")
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._params = {"format": "json", "pageno": "1", "categories": categories}
        if language:
            self._params["language"] = language
        # The instance is the operator's own: no proxy from the environment stands between.
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout_s,
            trust_env=False,
            follow_redirects=False,
            headers={"Accept": "application/json"},
            transport=transport,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        try:
            response = await self._client.get("/search", params={"q": query, **self._params})
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise SearchFailed(reason=f"SearXNG at {self.base_url} cannot be reached: {_describe(error)}", reached=False) from None
        except httpx.TimeoutException:
            raise SearchFailed(reason=f"SearXNG at {self.base_url} did not answer within {self._timeout_s:g} s") from None
        except httpx.HTTPError as error:
            raise SearchFailed(reason=f"SearXNG at {self.base_url} failed: {_describe(error)}") from None
        if response.status_code == 403:
            raise SearchFailed(
                reason="SearXNG refused format=json (403): list json under `search: formats:` in its settings.yml"
            )
        if response.status_code == 429:
            raise SearchFailed(reason="SearXNG rate-limited the search (429): turn `server: limiter:` off for turnlog's instance")
        if response.status_code != 200:
            raise SearchFailed(reason=f"SearXNG answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise SearchFailed(reason="SearXNG's answer is not JSON") from None
        return hits_of(answer, limit=limit)


def hits_of(answer: Any, *, limit: int) -> list[SearchHit]:
    """The first `limit` usable results of a SearXNG JSON answer (http(s) URL and a title; each URL once)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
        raise SearchFailed(reason="SearXNG's answer has no `results` list")
    hits: list[SearchHit] = []
    seen: set[str] = set()
    for result in answer["results"]:
        if not isinstance(result, dict):
            continue
        url, title, content = result.get("url"), result.get("title"), result.get("content")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or url in seen:
            continue
        seen.add(url)
        hits.append(
            SearchHit(
                url=url,
                title=" ".join(title.split()) if isinstance(title, str) and title.strip() else url,
                snippet=" ".join(content.split()) if isinstance(content, str) else "",
            )
        )
        if len(hits) == limit:
            break
    if not hits and answer.get("unresponsive_engines"):
        failed = ", ".join(_engine_failure(entry) for entry in answer["unresponsive_engines"])
        raise SearchFailed(reason=f"no result, and SearXNG's engines failed: {failed}")
    return hits


def _engine_failure(entry: Any) -> str:
    if isinstance(entry, list | tuple) and len(entry) == 2:
        return f"{entry[0]} ({entry[1]})"
    return str(entry)


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__
