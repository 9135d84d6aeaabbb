"""What the page fetcher may reach, pure: http(s) URLs, and public addresses unless the tools file allows the host.

A page's URL comes from the web (a search result, a redirect), so it may name anything: the metadata
service that hands out the host's cloud credentials, an admin page on loopback, a database on the
private network. The rules here decide on an address after DNS resolution (`refusal`), so no spelling
of a host (`2130706433`, `0x7f.1`, `localhost.`, `[::ffff:127.0.0.1]`, a name that resolves to
10.0.0.5) gets past them. Hosts the tools file allows (`allow_hosts`, matched by name, exactly) skip
the address rules, except the metadata addresses, which no page is ever read from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import httpx

IPAddress = IPv4Address | IPv6Address

SCHEMES = ("http", "https")
# Cloud instance metadata services: AWS, GCP and Azure (and OpenStack) at 169.254.169.254, AWS over IPv6,
# AWS ECS task metadata, Alibaba Cloud, Oracle Cloud. Most are link-local or private anyway; these are
# refused even for an allowed host, because what they serve is the machine's own credentials.
METADATA_ADDRESSES = frozenset(
    ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200", "192.0.0.192")
)
# Carrier-grade NAT (RFC 6598): neither private nor global to Python, and inside a provider's network.
SHARED_ADDRESS_SPACE = ip_network("100.64.0.0/10")
# NAT64's well-known prefix carries, in its last 32 bits, the IPv4 address a translator delivers to: that one
# decides. The local-use prefix (RFC 8215) spreads it differently and serves a site's own translators: refused.
NAT64_PREFIX = ip_network("64:ff9b::/96")
LOCAL_NAT64_PREFIX = ip_network("64:ff9b:1::/48")
_HOST_NAME = re.compile(r"(?=.{1,253}$)(?!-)[a-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9_-]{1,63}(?<!-))*")


class UrlRefused(Exception):
    """A URL the fetcher does not read before any I/O: not http(s), credentials in it, or no host."""

    def __init__(self, *, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class AddressRefused(Exception):
    """A host that resolved to an address the rules refuse; `reason` names the address and what it is."""

    def __init__(self, *, host: str, address: str, reason: str) -> None:
        super().__init__(f"{host} is {address}: {reason}" if host != address else f"{address}: {reason}")
        self.host = host
        self.address = address
        self.reason = reason


def refusal(address: IPAddress) -> str | None:
    """Why a page may not be read from `address`, or None when it is a public address."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = refusal(embedded)
            return f"an IPv6 form of {embedded}, {inner}" if inner else None
    checks = (
        (address.is_unspecified, "the unspecified address (it reaches this machine)"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in SHARED_ADDRESS_SPACE, "a carrier-grade NAT address (100.64.0.0/10)"),
        (address in LOCAL_NAT64_PREFIX, "a local-use NAT64 address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: IPv4-mapped (::ffff:a.b.c.d), 6to4 (2002::/16) or NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_PREFIX:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def normalized_host(host: str) -> str:
    """A host as connections name it: lower case, IDNA (`xn--`) form, no brackets or final dot; IPs canonical."""
    bare = host.strip().removeprefix("[").removesuffix("]").rstrip(".")
    try:
        return str(ip_address(bare))
    except ValueError:
        pass
    try:
        name = bare.lower() if bare.isascii() else httpx.URL(f"http://{bare}/").raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as error:
        raise ValueError(f"{host!r} is not a host name: {error}") from None
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(f"{host!r} is not a host name")
    return name


@dataclass(frozen=True, kw_only=True)
class AddressRules:
    """The SSRF rules with the tools file's exceptions: the hosts that may be read at any address but metadata."""

    allow_hosts: frozenset[str] = frozenset()

    @classmethod
    def allowing(cls, hosts: Iterable[str]) -> AddressRules:
        return cls(allow_hosts=frozenset(normalized_host(host) for host in hosts))

    def allows_host(self, host: str) -> bool:
        try:
            return normalized_host(host) in self.allow_hosts
        except ValueError:
            return False

    def check(self, host: str, addresses: Iterable[str]) -> None:
        """Every address `host` resolved to must pass (`AddressRefused` names the first that does not)."""
        allowed = self.allows_host(host)
        for text in addresses:
            try:
                address = ip_address(text)
            except ValueError:
                raise AddressRefused(host=host, address=text, reason="not an IP address") from None
            reason = refusal(address)
            if reason and (not allowed or address in METADATA_ADDRESSES):
                raise AddressRefused(host=host, address=str(address), reason=reason)


def checked_url(url: str | httpx.URL) -> httpx.URL:
    """`url` parsed, if it is one the fetcher may try: http or https, a host, no credentials; else `UrlRefused`."""
    text = str(url)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise UrlRefused(url=text, reason=f"not a URL ({error})") from None
    if parsed.scheme not in SCHEMES:
        scheme = f"{parsed.scheme}:" if parsed.scheme else "no scheme"
        raise UrlRefused(url=text, reason=f"{scheme} is not http or https")
    if not parsed.host:
        raise UrlRefused(url=text, reason="no host")
    if parsed.userinfo:
        raise UrlRefused(url=text, reason="credentials in the URL")
    return parsed
