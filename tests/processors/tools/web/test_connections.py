"""Guarded connections: hosts resolved by getaddrinfo and every address checked, then the socket pinned to one of them."""

from __future__ import annotations

import httpcore
import pytest

from processors.tools.web.connections import GuardedNetwork, system_resolve
from processors.tools.web.fetching import FetchLimits, PageFetcher
from processors.tools.web.ssrf import AddressRefused, AddressRules


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("localhost", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # decimal
        ("0x7f000001", "127.0.0.1"),  # hexadecimal
        ("0x7f.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),  # octal
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),  # short form
        ("0", "0.0.0.0"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("169.254.169.254", "169.254.169.254"),
    ],
)
async def test_hosts_are_judged_by_the_addresses_getaddrinfo_gives_whatever_their_spelling(host: str, address: str) -> None:
    assert address in await system_resolve(host, 80)
    with pytest.raises(AddressRefused) as refused:
        await GuardedNetwork(rules=AddressRules()).checked_addresses(host, 80)
    assert refused.value.host == host
    assert refused.value.reason in (
        "a loopback address",
        "the unspecified address (it reaches this machine)",
        "a cloud metadata address",
        "an IPv6 form of 127.0.0.1, a loopback address",
    )


async def test_one_refused_address_among_public_ones_refuses_the_host() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "2606:2800:220:1:248:1893:25c8:1946", "192.168.0.10"]

    with pytest.raises(AddressRefused, match="192.168.0.10"):
        await GuardedNetwork(rules=AddressRules(), resolve=resolve).checked_addresses("mixed.example", 443)


async def test_the_connection_goes_to_the_address_that_was_checked_never_to_a_second_lookup(search_service) -> None:
    """DNS rebinding: the name is resolved once per connection, and the socket opens to that very answer.

    `pages.test` exists only in this resolver, so the page can only be read if the connection used the
    checked address (a second lookup by the system would fail); the Host header still names `pages.test`.
    """
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    fetcher = PageFetcher(rules=AddressRules.allowing(["pages.test"]), limits=FetchLimits(timeout_s=30.0), resolve=resolve)
    try:
        page = await fetcher.fetch(f"http://pages.test:{search_service.port}/pages/apollo.html")
    finally:
        await fetcher.close()
    assert page.title == "Apollo 11: the first moon landing"
    assert lookups == ["pages.test"]


async def test_a_rebinding_answer_is_checked_like_any_other() -> None:
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])

    async def resolve(host: str, port: int) -> list[str]:
        return next(answers)

    network = GuardedNetwork(rules=AddressRules(), resolve=resolve)
    assert await network.checked_addresses("rebinding.example", 80) == ["93.184.215.14"]
    with pytest.raises(AddressRefused, match="loopback"):
        await network.checked_addresses("rebinding.example", 80)  # the next connection's own lookup


async def test_names_that_do_not_resolve_and_unix_sockets_do_not_connect() -> None:
    network = GuardedNetwork(rules=AddressRules())
    with pytest.raises(httpcore.ConnectError, match="does not resolve"):
        await network.checked_addresses("no-such-host.invalid", 80)
    with pytest.raises(AddressRefused, match="a Unix socket"):
        await network.connect_unix_socket("/var/run/docker.sock")


async def test_a_refused_address_is_never_connected_to() -> None:
    class Recording(httpcore.AsyncNetworkBackend):
        def __init__(self) -> None:
            self.connected: list[str] = []

        async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            self.connected.append(host)
            raise httpcore.ConnectError("recorded")

    inner = Recording()

    async def resolve(host: str, port: int) -> list[str]:
        return ["8.8.8.8", "10.0.0.1"]

    network = GuardedNetwork(rules=AddressRules(), resolve=resolve, inner=inner)
    with pytest.raises(AddressRefused):
        await network.connect_tcp("mixed.example", 80)
    assert inner.connected == []

    async def public(host: str, port: int) -> list[str]:
        return ["8.8.8.8", "8.8.4.4"]

    network = GuardedNetwork(rules=AddressRules(), resolve=public, inner=inner)
    with pytest.raises(httpcore.ConnectError, match="no address of dns.example answered"):
        await network.connect_tcp("dns.example", 80)
    assert inner.connected == ["8.8.8.8", "8.8.4.4"]  # the checked addresses, each in turn, never the name
