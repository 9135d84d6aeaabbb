"""The SSRF rules, pure: which addresses a page may be read from, the tools file's allowed hosts, and which URLs are tried."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from processors.tools.web.ssrf import AddressRefused, AddressRules, UrlRefused, checked_url, normalized_host, refusal

REFUSED = {
    # IPv4
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "0.0.0.0": "unspecified",
    "10.0.0.5": "private",
    "172.16.0.1": "private",
    "172.31.255.255": "private",
    "192.168.1.1": "private",
    "169.254.1.1": "link-local",
    "169.254.169.254": "metadata",  # AWS, GCP, Azure, OpenStack
    "169.254.170.2": "metadata",  # AWS ECS task credentials
    "100.100.100.200": "metadata",  # Alibaba Cloud
    "192.0.0.192": "metadata",  # Oracle Cloud
    "100.64.0.1": "carrier-grade NAT",
    "100.127.255.254": "carrier-grade NAT",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "",  # reserved for future use (private or reserved, by Python version)
    "255.255.255.255": "",
    "192.0.2.10": "",  # documentation (TEST-NET-1)
    "198.18.0.1": "",  # benchmarking
    # IPv6
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "fd00:ec2::254": "metadata",  # AWS's metadata service over IPv6
    "ff02::1": "multicast",
    "::ffff:127.0.0.1": "an IPv6 form of 127.0.0.1, a loopback address",
    "::ffff:10.1.2.3": "an IPv6 form of 10.1.2.3, a private address",
    "::ffff:169.254.169.254": "metadata",
    "64:ff9b::7f00:1": "an IPv6 form of 127.0.0.1",  # NAT64 to loopback
    "64:ff9b::a00:1": "an IPv6 form of 10.0.0.1",
    "2002:7f00:1::": "an IPv6 form of 127.0.0.1",  # 6to4 around loopback
    "2002:c0a8:101::1": "an IPv6 form of 192.168.1.1",
    "::127.0.0.1": "reserved",  # IPv4-compatible (deprecated)
    "2001:db8::1": "",  # documentation
    "64:ff9b:1::a00:1": "local-use NAT64",
}
PUBLIC = ["93.184.215.14", "8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", REFUSED, ids=str)
def test_addresses_that_are_not_public_are_refused_with_what_they_are(address: str) -> None:
    reason = refusal(ip_address(address))
    assert reason is not None and REFUSED[address] in reason  # "": refused, whatever Python calls it


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ip_address(address)) is None


def test_every_address_a_host_resolves_to_must_pass() -> None:
    rules = AddressRules()
    rules.check("example.com", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
    with pytest.raises(AddressRefused) as refused:
        rules.check("rebound.example", ["93.184.215.14", "10.0.0.5"])  # one public answer does not excuse the other
    assert (refused.value.host, refused.value.address) == ("rebound.example", "10.0.0.5")
    assert "private" in refused.value.reason
    with pytest.raises(AddressRefused, match="not an IP address"):
        rules.check("odd.example", ["not-an-address"])


def test_an_allowed_host_may_be_read_at_private_addresses_but_never_at_metadata_ones() -> None:
    rules = AddressRules.allowing(["Intranet.Example.", "127.0.0.1", "[::1]", "bücher.example"])
    rules.check("intranet.example", ["10.0.0.5", "127.0.0.1"])
    rules.check("INTRANET.example.", ["192.168.1.1"])  # the name matches however it is spelt
    rules.check("127.0.0.1", ["127.0.0.1"])
    rules.check("::1", ["::1"])
    rules.check("xn--bcher-kva.example", ["10.0.0.9"])  # IDNA: the form connections use
    with pytest.raises(AddressRefused, match="metadata"):
        rules.check("intranet.example", ["169.254.169.254"])
    # Matched by name, not by address: another name for the same loopback address is not allowed.
    with pytest.raises(AddressRefused, match="loopback"):
        rules.check("localhost", ["127.0.0.1"])
    with pytest.raises(AddressRefused, match="private"):
        rules.check("other.intranet.example", ["10.0.0.5"])  # no wildcards


def test_allowed_hosts_are_normalized_and_checked() -> None:
    assert normalized_host("Example.COM.") == "example.com"
    assert normalized_host("[::FFFF:7f00:1]") == normalized_host("::ffff:127.0.0.1")  # one canonical form
    assert normalized_host("münchen.de") == "xn--mnchen-3ya.de"
    with pytest.raises(ValueError, match="not a host name"):
        normalized_host("bad host/name")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "file: is not http or https"),
        ("ftp://example.com/file", "ftp: is not http or https"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "gopher: is not http or https"),
        ("javascript:alert(1)", "javascript: is not http or https"),
        ("data:text/html,<p>hi</p>", "data: is not http or https"),
        ("dict://127.0.0.1:11211/stats", "dict: is not http or https"),
        ("//example.com/no-scheme", "no scheme is not http or https"),
        ("http://user:secret@example.com/", "credentials in the URL"),
        ("http:///path-only", "no host"),
    ],
)
def test_only_http_and_https_urls_with_a_host_and_no_credentials_are_tried(url: str, reason: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        checked_url(url)
    assert refused.value.reason == reason


def test_http_and_https_urls_are_parsed() -> None:
    assert checked_url("HTTPS://Example.com/a?b=c#d").host == "example.com"
    assert checked_url("http://[::1]:8080/").host == "::1"
    assert checked_url("http://2130706433/").host == "2130706433"  # a name to the URL; the resolver decides
