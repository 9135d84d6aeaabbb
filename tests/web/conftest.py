"""The browser tests' fixtures: one real turnlog server for the folder (scripted engine, a tool that needs approval),
reached through a proxy that can cut connections, and headless Debian Chromium driven by Playwright.

Playwright cannot download browsers here: it drives the system's `/usr/bin/chromium` (`make setup` installs it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import load_test_module

e2e_server = load_test_module("e2e_server")
cuttable_proxy = load_test_module("cuttable_proxy", beside=Path(__file__))

CHROMIUM = Path(os.environ.get("TURNLOG_CHROMIUM", "/usr/bin/chromium"))
# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which this network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MCP_SERVER = Path(__file__).resolve().parents[1] / "processors" / "tools" / "mcp_test_server.py"
# Set to a folder (docs/images) to refresh the README's screenshots while the tests run.
SCREENSHOTS_ENV = "TURNLOG_WEB_SCREENSHOTS"


@dataclass(frozen=True, kw_only=True)
class WebServer:
    server: e2e_server.TurnlogServer
    proxy: cuttable_proxy.CuttableProxy

    @property
    def base_url(self) -> str:
        """The server as the browser reaches it: through the proxy."""
        return f"http://127.0.0.1:{self.proxy.port}"


@pytest.fixture(scope="package")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """Answers of 80 tokens at 40 ms (about 3.2 s): long enough to stop, cut or reload one mid-stream."""
    folder = tmp_path_factory.mktemp("web")
    tools = folder / "tools.toml"
    events = folder / "mcp-events.txt"
    events.touch()
    tools.write_text(
        "[[servers]]\n"
        'name = "local"\ntransport = "stdio"\n'
        f"command = {json.dumps(sys.executable)}\n"
        f'args = [{json.dumps(str(MCP_SERVER))}, "stdio", "--events", {json.dumps(str(events))}]\n'
        '[[tools]]\nserver = "local"\nname = "whoami"\nrequire_approval = true\n'
    )
    server = e2e_server.TurnlogServer(
        data_dir=folder / "data", token_delay_ms=40, answer_tokens=80, max_upload_mb=1.0, startup_deadline_s=90,
        extra_args=("--tools", str(tools)),
    )
    server.start()
    proxy = cuttable_proxy.CuttableProxy(target_port=server.port).start()
    try:
        yield WebServer(server=server, proxy=proxy)
    finally:
        proxy.stop()
        server.stop()


@pytest.fixture(scope="package", autouse=True)
def patient_expectations() -> None:
    """Assertions wait 30 s, not Playwright's 5: an answer that streams in 3.2 s takes longer on a loaded machine."""
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (as root), or set TURNLOG_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# What a failed browser test adds to its report: the page's requests and console, and the server's log.
FAILURE_DIAGNOSIS = pytest.StashKey[list[tuple[str, Callable[[], str]]]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    if report.when == "call" and report.failed:
        for name, describe in item.stash.get(FAILURE_DIAGNOSIS, []):
            report.sections.append((name, describe()))
    return report


class PageTraffic:
    """The page's requests with their status and duration (a request never answered shows as pending), and its
    console messages: when a browser test times out, these tell a slow server from a page that never asked."""

    def __init__(self, page) -> None:
        self.started = time.monotonic()
        self.lines: list[str] = []
        self.pending: dict[object, tuple[float, str]] = {}
        page.on("request", self._request)
        page.on("requestfinished", lambda request: self._ended(request, "finished"))
        page.on("requestfailed", lambda request: self._ended(request, f"failed: {request.failure}"))
        page.on("console", lambda message: self._line(f"console {message.type}: {message.text}"))

    def _line(self, text: str) -> None:
        self.lines.append(f"{time.monotonic() - self.started:8.3f} s  {text}")

    def _request(self, request) -> None:
        self.pending[request] = (time.monotonic(), f"{request.method} {request.url}")
        self._line(f"-> {request.method} {request.url}")

    def _ended(self, request, how: str) -> None:
        started, what = self.pending.pop(request, (time.monotonic(), request.url))
        response = request.response() if how == "finished" else None
        status = response.status if response else ""
        self._line(f"<- {what} {status} {how} after {1000 * (time.monotonic() - started):.0f} ms")

    def describe(self) -> str:
        now = time.monotonic()
        waiting = [f"pending {1000 * (now - started):.0f} ms: {what}" for started, what in self.pending.values()]
        return "\n".join([*self.lines[-200:], *waiting])


@pytest.fixture
def signed_in(
    web_server: WebServer, browser, request: pytest.FixtureRequest
) -> Iterator[tuple[object, e2e_server.User]]:
    """A page of a fresh browser context, signed in as a fresh user (a session made from their bearer token)."""
    user = web_server.server.new_user()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)
    try:
        response = context.request.post(
            f"{web_server.base_url}/v1/sessions", headers={"Authorization": f"Bearer {user.token}"}
        )
        assert response.status == 201, response.text()
        page = context.new_page()
        traffic = PageTraffic(page)
        request.node.stash[FAILURE_DIAGNOSIS] = [
            ("page traffic", traffic.describe), ("turnlog server log (tail)", web_server.server.output),
        ]
        page.goto(web_server.base_url)
        yield page, user
    finally:
        context.close()


def screenshot(page, name: str) -> None:
    """Save the page for the README when TURNLOG_WEB_SCREENSHOTS names a folder (docs/images); otherwise nothing."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))
