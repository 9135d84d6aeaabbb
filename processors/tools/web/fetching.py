"""Reading one web page for `web_search`: guarded connections, redirects followed by hand, bounded, HTML to text.

Every connection goes through `GuardedNetwork` (the SSRF rules, checked after DNS resolution, the
socket pinned to a checked address). Redirects are followed here, at most `max_redirects`, and each
hop's URL is checked again (http or https, no credentials) before its own guarded connection. A page
must answer 2xx with HTML, XHTML, plain text or Markdown within `timeout_s` (the whole page: connecting,
every hop, the body, the extraction), and its body may not pass `max_bytes` once decoded; it is read
as it arrives and dropped the moment it does. The text comes from turnlog's own extraction
(`processors/ingestion/extraction`: the same reader as an uploaded HTML file), off the event loop.
Nothing here reads the environment: no proxy is used, so no proxy can reach what the rules refuse.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import zlib
from dataclasses import dataclass
from typing import Literal

import httpcore
import httpx

from processors.ingestion.extraction.dispatch import extract
from processors.ingestion.extraction.document import ExtractionFailed, MediaType
from processors.tools.web.bodies import BodyTooLarge, CappedBody, UnsupportedEncoding
from processors.tools.web.connections import GuardedNetwork, Resolver, system_resolve
from processors.tools.web.ssrf import AddressRefused, AddressRules, UrlRefused, checked_url

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 2 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 5
USER_AGENT = "turnlog-web-search/1.0 (an assistant reading a page it found for a user)"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
READABLE_TYPES = {
    "text/html": MediaType.HTML,
    "application/xhtml+xml": MediaType.HTML,
    "text/plain": MediaType.TEXT,
    "text/markdown": MediaType.MARKDOWN,
}

Failure = Literal["refused", "timed_out", "too_large", "unreadable", "http_error", "unreachable"]


@dataclass(frozen=True, kw_only=True)
class FetchLimits:
    """How long a page may take, how large it may be once decoded, and how many redirects lead to it."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = DEFAULT_MAX_REDIRECTS

    def __post_init__(self) -> None:
        if not math.isfinite(self.timeout_s) or self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be a finite number > 0, got {self.timeout_s}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")
        if self.max_redirects < 0:
            raise ValueError(f"max_redirects must be >= 0, got {self.max_redirects}")


@dataclass(frozen=True, kw_only=True)
class FetchedPage:
    """A page's text: the URL it was read from (after redirects), its title, its paragraphs in reading order."""

    url: str
    title: str
    paragraphs: tuple[str, ...]


class PageUnread(Exception):
    """Why a page was not read: `failure` says what kind of reason, `reason` says it for a person (and the model)."""

    def __init__(self, *, url: str, failure: Failure, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.failure = failure
        self.reason = reason


class PageFetcher:
    """Reads pages off the web under the SSRF rules and the limits; one connection pool, closed by `close`."""

    def __init__(
        self,
        *,
        rules: AddressRules = AddressRules(),
        limits: FetchLimits = FetchLimits(),
        resolve: Resolver = system_resolve,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.limits = limits
        self._headers = [
            (b"User-Agent", user_agent.encode()),
            (b"Accept", b"text/html,application/xhtml+xml,text/plain;q=0.9,text/markdown;q=0.9,*/*;q=0.1"),
            (b"Accept-Encoding", b"gzip, deflate"),
        ]
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpcore.default_ssl_context(),
            max_connections=32,
            max_keepalive_connections=8,
            keepalive_expiry=5.0,
            retries=0,
            network_backend=GuardedNetwork(rules=rules, resolve=resolve),
        )

    async def close(self) -> None:
        await self._pool.aclose()

    async def fetch(self, url: str, *, timeout_s: float | None = None) -> FetchedPage:
        """The page at `url`, read within `timeout_s` (at most the limits' own); `PageUnread` says why not."""
        timeout = self.limits.timeout_s if timeout_s is None else min(timeout_s, self.limits.timeout_s)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                final_url, media_type, body = await self._download(url, timeout)
                # bs4 on a 2 MiB page takes a CPU for a second: off the loop. The thread cannot be cancelled;
                # at the deadline the page is given up and the thread's result dropped.
                document = await asyncio.to_thread(extract, body, media_type)
        except TimeoutError:
            if deadline.expired():
                raise PageUnread(url=url, failure="timed_out", reason=f"timed out after {timeout:.3g} s") from None
            raise
        except ExtractionFailed as error:
            raise PageUnread(url=url, failure="unreadable", reason=error.reason) from None
        paragraphs = tuple(
            paragraph for section in document.sections for paragraph in section.text.split("\n\n") if paragraph.strip()
        )
        return FetchedPage(url=final_url, title=document.title, paragraphs=paragraphs)

    async def _download(self, url: str, timeout_s: float) -> tuple[str, MediaType, bytes]:
        """The body of the page `url` leads to (redirects followed), its URL and its kind; `PageUnread` otherwise."""
        current = url
        try:
            target = checked_url(url)
            for hop in range(self.limits.max_redirects + 1):
                current = str(target)
                extensions = {"timeout": {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}}
                async with self._pool.stream("GET", _core_url(target), headers=self._headers, extensions=extensions) as response:
                    if response.status in REDIRECT_STATUSES:
                        location = _header(response, b"location")
                        if not location:
                            raise PageUnread(url=current, failure="http_error", reason=f"HTTP {response.status} without a Location")
                        if hop == self.limits.max_redirects:
                            raise PageUnread(url=url, failure="http_error", reason=f"more than {self.limits.max_redirects} redirects")
                        target = checked_url(target.join(location))
                        continue
                    if not 200 <= response.status < 300:
                        raise PageUnread(url=current, failure="http_error", reason=f"HTTP {response.status}")
                    media_type = _readable_type(_header(response, b"content-type"), current)
                    return current, media_type, await self._body(response, current)
        except UrlRefused as error:
            raise PageUnread(url=error.url, failure="refused", reason=f"refused: {error.reason}") from None
        except AddressRefused as error:
            where = error.address if error.host == error.address else f"{error.host} is {error.address}"
            raise PageUnread(url=current, failure="refused", reason=f"refused: {where}, {error.reason}") from None
        except httpcore.TimeoutException:
            raise PageUnread(url=current, failure="timed_out", reason=f"timed out after {timeout_s:.3g} s") from None
        except httpcore.ConnectError as error:
            raise PageUnread(url=current, failure="unreachable", reason=f"could not connect: {error}") from None
        except httpcore.ProtocolError as error:
            raise PageUnread(url=current, failure="unreachable", reason=f"the server broke HTTP: {error}") from None
        except httpcore.NetworkError as error:
            raise PageUnread(url=current, failure="unreachable", reason=f"the connection failed: {error}") from None
        raise AssertionError("unreachable: the loop returns or raises")

    async def _body(self, response: httpcore.Response, url: str) -> bytes:
        declared = _header(response, b"content-length")
        if declared.isdigit() and int(declared) > self.limits.max_bytes:
            raise PageUnread(url=url, failure="too_large", reason=f"larger than {self.limits.max_bytes:,} bytes ({int(declared):,})")
        try:
            body = CappedBody(content_encoding=_header(response, b"content-encoding"), max_bytes=self.limits.max_bytes)
            async for chunk in response.aiter_stream():
                body.feed(chunk)
            return body.content()
        except BodyTooLarge as error:
            raise PageUnread(url=url, failure="too_large", reason=str(error)) from None
        except UnsupportedEncoding as error:
            raise PageUnread(url=url, failure="unreadable", reason=str(error)) from None
        except zlib.error as error:
            raise PageUnread(url=url, failure="unreadable", reason=f"the compressed body is damaged: {error}") from None


def _core_url(url: httpx.URL) -> httpcore.URL:
    return httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)


def _header(response: httpcore.Response, name: bytes) -> str:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return ""


def _readable_type(content_type: str, url: str) -> MediaType:
    essence = content_type.split(";", 1)[0].strip().lower()
    if essence in READABLE_TYPES:
        return READABLE_TYPES[essence]
    shown = essence or "no content type"
    raise PageUnread(url=url, failure="unreadable", reason=f"not a web page or text ({shown})")
