"""`web_search`'s settings, the tools file's `[web_search]` table: where SearXNG answers, what a call reads, the SSRF exceptions.

Checked on construction; a bad value raises `DeclarationError` naming its key, which the tools file's
parser turns into `tools.toml:<line>: web_search.<key>: <problem>`. Nothing here imports the tools file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from processors.tools.catalog import DeclarationError
from processors.tools.web.excerpts import DEFAULT_MAX_CHARS
from processors.tools.web.fetching import DEFAULT_MAX_BYTES, DEFAULT_MAX_REDIRECTS, FetchLimits, PageFetcher
from processors.tools.web.ssrf import AddressRules, normalized_host

MAX_RESULTS = 5  # the most pages one call reads (the model's `max_results`, the file's `max_pages`)


@dataclass(frozen=True, kw_only=True)
class WebSearchSettings:
    """The tools file's `[web_search]` table: where SearXNG answers, what a call reads, and the SSRF exceptions."""

    searxng_url: str
    search_timeout_s: float = 10.0  # the search engine's answer
    max_pages: int = 3  # pages read per call unless the model asks for 1-5
    page_timeout_s: float = 8.0  # one page: connecting, redirects, body and extraction
    max_page_bytes: int = DEFAULT_MAX_BYTES  # one page's body, decoded
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    passage_chars: int = DEFAULT_MAX_CHARS  # the passage quoted from each page
    allow_hosts: tuple[str, ...] = ()  # hosts read even at loopback, private or link-local addresses (never metadata)

    def __post_init__(self) -> None:
        if not self.searxng_url.startswith(("http://", "https://")):
            raise DeclarationError(field="searxng_url", problem=f"{self.searxng_url!r} is not an http(s) URL")
        for name in ("search_timeout_s", "page_timeout_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise DeclarationError(field=name, problem=f"must be a finite number > 0, got {value}")
        if not 1 <= self.max_pages <= MAX_RESULTS:
            raise DeclarationError(field="max_pages", problem=f"must be 1 to {MAX_RESULTS}, got {self.max_pages}")
        if self.max_page_bytes < 1024:
            raise DeclarationError(field="max_page_bytes", problem=f"must be >= 1024, got {self.max_page_bytes}")
        if self.max_redirects < 0:
            raise DeclarationError(field="max_redirects", problem=f"must be >= 0, got {self.max_redirects}")
        if self.passage_chars < 100:
            raise DeclarationError(field="passage_chars", problem=f"must be >= 100, got {self.passage_chars}")
        for index, host in enumerate(self.allow_hosts):
            try:
                normalized_host(host)
            except ValueError as error:
                raise DeclarationError(field=f"allow_hosts[{index}]", problem=str(error)) from None

    def fetcher(self) -> PageFetcher:
        """A page fetcher under these limits and exceptions."""
        return PageFetcher(
            rules=AddressRules.allowing(self.allow_hosts),
            limits=FetchLimits(timeout_s=self.page_timeout_s, max_bytes=self.max_page_bytes, max_redirects=self.max_redirects),
        )
