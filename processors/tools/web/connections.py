"""Connections the page fetcher opens: the host resolved once, every address checked, the socket pinned to one.

The guard sits in httpcore's network backend, the one place every connection is made (the first
request and every redirect alike). `connect_tcp` gets the URL's host, resolves it with
`loop.getaddrinfo`, refuses the connection if any of its addresses is refused (`AddressRules`), and
then connects to one of exactly those addresses, never to the name: a DNS answer that changes between
the check and the connection (rebinding) is never asked for. Everything above the socket still uses
the name, so the Host header, TLS's SNI and the certificate's check are those of the URL's host.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable

import httpcore

from processors.tools.web.ssrf import AddressRefused, AddressRules

# A host name and a port to the addresses it resolves to, as text, in the resolver's order.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolve(host: str, port: int) -> list[str]:
    """The host's addresses from the system's resolver (`getaddrinfo`: /etc/hosts, DNS, numeric forms)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedNetwork(httpcore.AsyncNetworkBackend):
    """httpcore's network backend behind the SSRF rules: connections go only to addresses that were checked."""

    def __init__(
        self,
        *,
        rules: AddressRules,
        resolve: Resolver = system_resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._rules = rules
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def checked_addresses(self, host: str, port: int, *, timeout: float | None = None) -> list[str]:
        """The addresses `host` resolves to, once every one has passed the rules (`AddressRefused` if one fails)."""
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout:g} s") from None
        except (OSError, UnicodeError) as error:  # socket.gaierror is an OSError
            raise httpcore.ConnectError(f"{host} does not resolve: {error}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        self._rules.check(host, addresses)
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failures: list[Exception] = []
        for address in await self.checked_addresses(host, port, timeout=timeout):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:  # the next address may answer
                failures.append(error)
        if len(failures) == 1:
            raise failures[0]
        raise httpcore.ConnectError(f"no address of {host} answered: {'; '.join(map(str, failures))}")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused(host=path, address=path, reason="a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
