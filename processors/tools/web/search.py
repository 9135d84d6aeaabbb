"""The web search port: a query to ranked hits (URL, title, snippet), whatever engine answers it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, kw_only=True)
class SearchHit:
    """One result as the engine ranked it: the page's URL and title, and the engine's snippet of it ("" if none)."""

    url: str
    title: str
    snippet: str = ""


class SearchFailed(Exception):
    """The engine gave no usable answer; `reason` says why for a person. `reached`: False when it was never reached."""

    def __init__(self, *, reason: str, reached: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reached = reached


class SearchEngine(Protocol):
    """A web search engine: the best `limit` hits for a query, best first."""

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """At most `limit` hits with http(s) URLs, best first, no URL twice; `SearchFailed` when the engine fails."""
        ...

    async def close(self) -> None:
        """Releases its connections."""
        ...
