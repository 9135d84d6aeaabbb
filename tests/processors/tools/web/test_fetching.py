"""Reading pages from the local search service over loopback: allowed only because the tools file allows its host.

The service listens on 127.0.0.1, a loopback address the rules refuse; each test's fetcher allows the
host `127.0.0.1` explicitly, as a tools file's `allow_hosts` would, except where a test proves the
refusal. Redirects lead to other names and addresses, which are checked again at the hop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from processors.tools.web.fetching import FetchLimits, PageFetcher, PageUnread
from processors.tools.web.ssrf import AddressRules

LOOPBACK_ALLOWED = AddressRules.allowing(["127.0.0.1"])


@pytest.fixture
async def fetcher() -> AsyncIterator[PageFetcher]:
    fetcher = PageFetcher(rules=LOOPBACK_ALLOWED, limits=FetchLimits(timeout_s=30.0, max_bytes=256 * 1024))
    try:
        yield fetcher
    finally:
        await fetcher.close()


async def unread(fetcher: PageFetcher, url: str, **options) -> PageUnread:
    with pytest.raises(PageUnread) as failure:
        await fetcher.fetch(url, **options)
    return failure.value


async def test_a_page_on_an_allowed_host_is_read_as_text(fetcher: PageFetcher, search_service) -> None:
    url = f"{search_service.base_url}/pages/tides.html"
    page = await fetcher.fetch(url)
    assert page.url == url
    assert page.title == "Why the sea has two tides a day"
    assert any(paragraph.startswith("Tides are caused mainly by the gravity of the moon.") for paragraph in page.paragraphs)
    text = "\n".join(page.paragraphs)
    assert "window.analytics" not in text and "Home | Eclipses" not in text  # scripts and navigation dropped


async def test_the_same_fetch_without_the_allowance_is_refused(search_service) -> None:
    """The proof the issue asks for: the page above, refused when the tools file does not allow its host."""
    guarded = PageFetcher()  # no allow_hosts: the rules alone
    try:
        failure = await unread(guarded, f"{search_service.base_url}/pages/tides.html")
    finally:
        await guarded.close()
    assert failure.failure == "refused"
    assert failure.reason == "refused: 127.0.0.1, a loopback address"


async def test_plain_text_is_read_and_other_content_is_not(fetcher: PageFetcher, search_service) -> None:
    page = await fetcher.fetch(f"{search_service.base_url}/plain")
    assert page.paragraphs == ("Plain notes on the moon.", "The moon keeps the same face towards the Earth.")
    failure = await unread(fetcher, f"{search_service.base_url}/binary")
    assert (failure.failure, failure.reason) == ("unreadable", "not a web page or text (application/octet-stream)")
    failure = await unread(fetcher, f"{search_service.base_url}/status/404")
    assert (failure.failure, failure.reason) == ("http_error", "HTTP 404")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://localhost:{port}/pages/tides.html", "refused: localhost is 127.0.0.1, a loopback address"),
        ("http://127.0.0.2:{port}/pages/tides.html", "refused: 127.0.0.2, a loopback address"),
        ("http://2130706433:{port}/pages/tides.html", "refused: 2130706433 is 127.0.0.1, a loopback address"),
        ("http://[::1]:{port}/pages/tides.html", "refused: ::1, a loopback address"),
        ("http://10.20.30.40/admin", "refused: 10.20.30.40, a private address"),
        ("http://169.254.169.254/latest/meta-data/iam/", "refused: 169.254.169.254, a cloud metadata address"),
        ("file:///etc/passwd", "refused: file: is not http or https"),
    ],
)
async def test_a_redirect_from_an_allowed_page_is_checked_again_at_the_hop(
    fetcher: PageFetcher, search_service, target: str, reason: str
) -> None:
    hop = target.replace("{port}", str(search_service.port))
    failure = await unread(fetcher, f"{search_service.base_url}/redirect?to={hop}")
    assert failure.failure == "refused"
    assert failure.reason == reason
    if hop.startswith("http"):
        assert failure.url == hop  # the hop that was refused, not the allowed page that led there


async def test_redirects_are_followed_up_to_the_limit(fetcher: PageFetcher, search_service) -> None:
    page = await fetcher.fetch(f"{search_service.base_url}/hops/5")
    assert page.url == f"{search_service.base_url}/pages/tides.html" and page.title == "Why the sea has two tides a day"
    failure = await unread(fetcher, f"{search_service.base_url}/hops/6")
    assert (failure.failure, failure.reason) == ("http_error", "more than 5 redirects")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_page_over_the_size_cap_is_not_read(fetcher: PageFetcher, search_service, declared: bool) -> None:
    cap = fetcher.limits.max_bytes
    page = await fetcher.fetch(f"{search_service.base_url}/big?bytes={cap}&declared={int(declared)}")
    assert page.paragraphs and page.paragraphs[0].startswith("The moon raises the tides.")
    failure = await unread(fetcher, f"{search_service.base_url}/big?bytes={cap + 1}&declared={int(declared)}")
    assert failure.failure == "too_large" and failure.reason.startswith("larger than 262,144 bytes")


async def test_a_compressed_page_is_capped_by_its_decoded_size(fetcher: PageFetcher, search_service) -> None:
    failure = await unread(fetcher, f"{search_service.base_url}/bomb")  # 64 kB on the wire, 64 MiB decoded
    assert (failure.failure, failure.reason) == ("too_large", "larger than 262,144 bytes")


@pytest.mark.parametrize("path", ["/stall", "/drip"], ids=["no answer", "a byte at a time"])
async def test_a_page_that_takes_too_long_times_out(fetcher: PageFetcher, search_service, path: str) -> None:
    started = time.monotonic()
    failure = await unread(fetcher, f"{search_service.base_url}{path}", timeout_s=1.0)
    assert (failure.failure, failure.reason) == ("timed_out", "timed out after 1 s")
    assert time.monotonic() - started < 30  # the deadline held (generous: a loaded machine)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "refused: file: is not http or https"),
        ("ftp://127.0.0.1/", "refused: ftp: is not http or https"),
        ("gopher://127.0.0.1:70/", "refused: gopher: is not http or https"),
        ("http://user:pw@127.0.0.1/", "refused: credentials in the URL"),
    ],
)
async def test_urls_that_are_not_http_are_refused_before_any_connection(fetcher: PageFetcher, url: str, reason: str) -> None:
    failure = await unread(fetcher, url)
    assert (failure.failure, failure.reason, failure.url) == ("refused", reason, url)


async def test_a_host_that_does_not_resolve_is_unreachable(fetcher: PageFetcher) -> None:
    failure = await unread(fetcher, "http://no-such-host.invalid/")
    assert failure.failure == "unreachable" and "does not resolve" in failure.reason
