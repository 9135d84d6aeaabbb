"""The web page's part of `turnlog serve`: the one-time sign-in link it prints, and the `--cors-origins` option."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, TextIO

from api.cors import checked_origin
from api.sign_in_codes import LOCAL_PRINCIPAL, SignInCodes
from turnlog.settings import Settings, url_scheme

if TYPE_CHECKING:
    from api.context import ApiContext

Start = Callable[[], AbstractAsyncContextManager["ApiContext"]]


def sign_in_url(*, host: str, port: int, code: str) -> str:
    """The link a browser on this machine opens: a wildcard listening address is shown as loopback."""
    if host in ("", "0.0.0.0"):
        shown = "127.0.0.1"
    elif host == "::":
        shown = "[::1]"
    else:
        shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/signin?code={code}"


def with_sign_in_link(settings: Settings, start: Start) -> tuple[Start, SignInCodes | None]:
    """On the embedded log (one process on this machine): `start` printing a sign-in link, and the codes `/signin` honours.

    Elsewhere (a fleet on Kafka) nothing is printed and `/signin` honours no code: people sign in with tokens.
    """
    if url_scheme(settings.log) != "sqlite":
        return start, None
    codes = SignInCodes()
    return announcing_sign_in_link(start, codes=codes, host=settings.host, port=settings.port), codes


def announcing_sign_in_link(
    start: Start, *, codes: SignInCodes, host: str, port: int, out: TextIO | None = None
) -> Start:
    """`start`, printing a fresh one-time link for the local user once the system is up (Jupyter-style)."""

    @asynccontextmanager
    async def started() -> AsyncIterator[ApiContext]:
        async with start() as context:
            url = sign_in_url(host=host, port=port, code=codes.issue(LOCAL_PRINCIPAL))
            minutes = round(codes.ttl_s / 60)
            print(
                f"turnlog serve: to chat as the local user, open {url} (it signs in once, within {minutes} minutes)",
                file=out or sys.stderr, flush=True,
            )
            yield context

    return started


def origins_option(text: str) -> tuple[str, ...]:
    """`--cors-origins`: comma-separated origins (`https://chat.example.com,http://localhost:5173`) or `*`."""
    try:
        return tuple(checked_origin(origin) for origin in text.split(",") if origin.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
