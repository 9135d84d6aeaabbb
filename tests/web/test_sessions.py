"""Browser sessions over real HTTP: the cookie authenticates, its writes need the CSRF header, a bearer token wins,
CORS stays off by default, and the page is served with its Content-Security-Policy."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import load_test_module
from tests.web.conftest import WebServer

e2e_server = load_test_module("e2e_server")


@pytest.fixture
def server(web_server: WebServer) -> e2e_server.TurnlogServer:
    return web_server.server


def signed_in_cookies(server, user) -> dict[str, str]:
    response = httpx.post(f"{server.base_url}/v1/sessions", headers=user.headers, timeout=10)
    assert response.status_code == 201, response.text
    assert response.json()["userId"] == user.user_id
    set_cookies = response.headers.get_list("set-cookie")
    session = next(header for header in set_cookies if header.startswith("turnlog_session="))
    assert "HttpOnly" in session and "SameSite=lax" in session and "Path=/" in session
    csrf = next(header for header in set_cookies if header.startswith("turnlog_csrf="))
    assert "HttpOnly" not in csrf
    return {name: response.cookies[name] for name in ("turnlog_session", "turnlog_csrf")}


def test_a_session_cookie_authenticates_and_its_writes_need_the_csrf_header(server) -> None:
    user = server.new_user()
    cookies = signed_in_cookies(server, user)
    body = {"workspaceId": user.workspace, "title": "by cookie"}
    with httpx.Client(base_url=server.base_url, cookies=cookies, timeout=10) as browser:
        current = browser.get("/v1/sessions/current")
        assert current.status_code == 200 and current.json() == {
            "userId": user.user_id, "orgId": user.org_id, "workspaceIds": list(user.workspaces), "role": "member",
            "via": "cookie",
        }
        assert browser.get("/v1/conversations", params={"workspaceId": user.workspace}).status_code == 200

        missing = e2e_server.assert_problem(browser.post("/v1/conversations", json=body), 403)
        assert "X-Turnlog-CSRF" in missing["detail"] and "turnlog_csrf" in missing["detail"]
        wrong = browser.post("/v1/conversations", json=body, headers={"X-Turnlog-CSRF": "0" * 64})
        assert "does not match" in e2e_server.assert_problem(wrong, 403)["detail"]
        created = browser.post("/v1/conversations", json=body, headers={"X-Turnlog-CSRF": cookies["turnlog_csrf"]})
        assert created.status_code == 201, created.text

        signed_out = browser.delete("/v1/sessions/current", headers={"X-Turnlog-CSRF": cookies["turnlog_csrf"]})
        assert signed_out.status_code == 204
        assert all("Max-Age=0" in header for header in signed_out.headers.get_list("set-cookie"))


def test_another_sessions_csrf_value_does_not_pass(server) -> None:
    mine, theirs = signed_in_cookies(server, server.new_user()), signed_in_cookies(server, server.new_user())
    response = httpx.post(
        f"{server.base_url}/v1/conversations", json={"workspaceId": "ws_x"},
        cookies={"turnlog_session": mine["turnlog_session"], "turnlog_csrf": theirs["turnlog_csrf"]},
        headers={"X-Turnlog-CSRF": theirs["turnlog_csrf"]}, timeout=10,
    )
    e2e_server.assert_problem(response, 403)


def test_a_bearer_token_wins_over_the_cookie_and_needs_no_csrf_header(server) -> None:
    cookie_user, bearer_user = server.new_user(), server.new_user()
    cookies = signed_in_cookies(server, cookie_user)
    with httpx.Client(base_url=server.base_url, cookies=cookies, headers=bearer_user.headers, timeout=10) as client:
        current = client.get("/v1/sessions/current").json()
        assert (current["userId"], current["via"]) == (bearer_user.user_id, "bearer")
        created = client.post("/v1/conversations", json={"workspaceId": bearer_user.workspace})
        assert created.status_code == 201, created.text


def test_a_forged_cookie_is_a_401_and_signing_in_needs_a_bearer_token(server) -> None:
    forged = httpx.get(f"{server.base_url}/v1/sessions/current", cookies={"turnlog_session": "not-a-token"}, timeout=10)
    assert "browser session is no longer valid" in e2e_server.assert_problem(forged, 401)["detail"]
    e2e_server.assert_problem(httpx.get(f"{server.base_url}/v1/sessions/current", timeout=10), 401)
    e2e_server.assert_problem(httpx.post(f"{server.base_url}/v1/sessions", timeout=10), 401)
    bad = httpx.post(f"{server.base_url}/v1/sessions", headers={"Authorization": "Bearer nope"}, timeout=10)
    e2e_server.assert_problem(bad, 401)
    unknown_code = httpx.get(f"{server.base_url}/signin", params={"code": "guessed"}, timeout=10)
    assert unknown_code.status_code == 400 and "turnlog_session" not in unknown_code.headers.get("set-cookie", "")


def test_cors_is_off_by_default(server) -> None:
    preflight = httpx.options(
        f"{server.base_url}/v1/conversations", timeout=10,
        headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = httpx.get(f"{server.base_url}/healthz", headers={"Origin": "https://elsewhere.example"}, timeout=10)
    assert "access-control-allow-origin" not in simple.headers


def test_the_page_and_its_files_are_served_without_a_build_step(server) -> None:
    page = httpx.get(f"{server.base_url}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/static/app.js">' in page.text
    for path in ("app.js", "api.js", "stream.js", "markdown.js", "vendor/marked.esm.js", "vendor/purify.es.mjs"):
        script = httpx.get(f"{server.base_url}/static/{path}", timeout=10)
        assert script.status_code == 200 and "javascript" in script.headers["content-type"], path
    for path in ("style.css", "vendor/README.md", "vendor/marked.LICENSE", "vendor/dompurify.LICENSE"):
        assert httpx.get(f"{server.base_url}/static/{path}", timeout=10).status_code == 200, path
