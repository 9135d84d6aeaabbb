"""The options that bound what clients may send `turnlog serve` and how long tokens live (docs/deploy.md, Limits)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from api.auth import DEFAULT_MAX_TOKEN_TTL_S
from turnlog.options import CommandParser, integer_option, number_option

if TYPE_CHECKING:
    from api.connections import ConnectionLimits

# The shortest a deployment may make tokens live: a token must outlast the request that uses it.
MIN_TOKEN_TTL_S = 60


def add_max_token_ttl_option(parser: CommandParser) -> None:
    """`--max-token-ttl-s`, on `serve` (what it accepts) and `token` (what it signs): one variable sets both."""
    parser.add_option(
        "--max-token-ttl-s", type=integer_option(at_least=MIN_TOKEN_TTL_S), default=DEFAULT_MAX_TOKEN_TTL_S,
        metavar="SECONDS",
        help="the longest a bearer token or browser session may be valid (exp - iat): longer ones are refused",
    )


def add_connection_options(parser: CommandParser) -> None:
    """The bounds each connection of `turnlog serve` is held to, before any request reaches the API."""
    parser.add_option(
        "--max-url-kib", type=integer_option(at_least=1), default=8, metavar="KIB",
        help="the longest request URL; longer: 414",
    )
    parser.add_option(
        "--max-header-kib", type=integer_option(at_least=1), default=16, metavar="KIB",
        help="the longest one header line (name and value) may be; longer: 431",
    )
    parser.add_option(
        "--max-request-head-kib", type=integer_option(at_least=1), default=64, metavar="KIB",
        help="the most the request line and all header lines may be together; more: 431",
    )
    parser.add_option(
        "--max-headers", type=integer_option(at_least=1), default=100, metavar="N",
        help="the most header lines a request may have; more: 431",
    )
    parser.add_option(
        "--request-head-timeout-s", type=number_option(above=0), default=20.0, metavar="SECONDS",
        help="a request line and headers not all in this long after the connection or their first byte: 408",
    )
    parser.add_option(
        "--min-body-bytes-per-s", type=number_option(at_least=0), default=1024.0, metavar="BYTES",
        help="a request body arriving slower than this on average, after --body-grace-s: 408 (0: no minimum)",
    )
    parser.add_option(
        "--body-grace-s", type=number_option(at_least=0), default=10.0, metavar="SECONDS",
        help="a request body's first seconds, not held to --min-body-bytes-per-s",
    )
    parser.add_option(
        "--keep-alive-s", type=number_option(above=0), default=15.0, metavar="SECONDS",
        help="an idle connection between requests is closed after this long; behind a load balancer, make it longer"
        " than the balancer's idle timeout",
    )
    parser.add_option(
        "--max-connections", type=integer_option(at_least=1), default=2048, metavar="N",
        help="the most connections open at once from all clients; more: 503 (keep it under the open-file limit)",
    )
    parser.add_option(
        "--max-connections-per-client", type=integer_option(at_least=0), default=256, metavar="N",
        help="the most connections open at once from one client address; more: 429 (0: no cap; behind a proxy every"
        " client has the proxy's address)",
    )


def connection_limits(arguments: argparse.Namespace) -> ConnectionLimits:
    from api.connections import ConnectionLimits

    return ConnectionLimits(
        max_url_bytes=arguments.max_url_kib * 1024,
        max_header_bytes=arguments.max_header_kib * 1024,
        max_head_bytes=arguments.max_request_head_kib * 1024,
        max_headers=arguments.max_headers,
        head_timeout_s=arguments.request_head_timeout_s,
        min_body_bytes_per_s=arguments.min_body_bytes_per_s,
        body_grace_s=arguments.body_grace_s,
        keep_alive_s=arguments.keep_alive_s,
        max_connections=arguments.max_connections,
        max_connections_per_client=arguments.max_connections_per_client,
    )
