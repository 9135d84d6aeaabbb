"""The chat page in a real browser (headless Debian Chromium driven by Playwright) against a real turnlog server.

The scripted engine answers ` [digest]` then the question's words, one token every 40 ms, so an answer streams
for about 3.2 s: long enough to stop it, cut its connection or reload the page in the middle of it.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from tests.web.conftest import WebServer, screenshot

TIDES_MD = (
    b"# Tide notes\n\n"
    b"Spring tides follow the full moon by about two days.\n\n"
    b"## Harbour\n\nThe harbour gate closes two hours before low water.\n"
)


def ask(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def last_answer(page: Page):
    return page.locator("li.turn.assistant").last


def words(text: str) -> str:
    return " ".join(text.split())


def stored_answer(web_server: WebServer, user, page: Page, turn_seq: int) -> dict:
    """The assistant turn as the API stores it, once it has finished (read over HTTP with the user's bearer token)."""
    conversation_id = page.url.partition("#")[2]
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(
            f"{web_server.server.base_url}/v1/conversations/{conversation_id}/turns",
            params={"afterSeq": turn_seq - 1, "limit": 1}, headers=user.headers, timeout=10,
        )
        assert response.status_code == 200, response.text
        [turn] = response.json()["turns"]
        if turn["state"] != "in_progress":
            return turn
        assert time.monotonic() < deadline, turn
        time.sleep(0.05)


def text_of(turn: dict) -> str:
    return "".join(part["text"] for part in turn["content"] if part["type"] == "text")


def streaming_with(page: Page, fragment: str) -> None:
    """Wait until the latest answer shows `fragment` while it is still streaming."""
    page.wait_for_function(
        """(fragment) => {
            const answers = document.querySelectorAll('li.turn.assistant');
            const answer = answers[answers.length - 1];
            return answer && answer.getAttribute('aria-busy') === 'true'
                && answer.querySelector('.answer').textContent.includes(fragment);
        }""",
        arg=fragment,
    )


CONVERSATION_LIST = re.compile(r".*/v1/conversations\?workspaceId=.*")


@contextlib.contextmanager
def opened_with_its_first_list_held(web_server: WebServer, browser, hold: Callable[[Route], None]) -> Iterator[Page]:
    """A page signed in as a fresh user and opened with its requests for the conversation list given to `hold`; it
    returns once the first of them came (the page asks for the list as it opens)."""
    user = web_server.server.new_user()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)
    try:
        assert context.request.post(
            f"{web_server.base_url}/v1/sessions", headers={"Authorization": f"Bearer {user.token}"}
        ).status == 201
        page = context.new_page()
        asked: list[Route] = []
        page.route(CONVERSATION_LIST, lambda route: (asked.append(route), hold(route)))
        page.goto(web_server.base_url)
        deadline = time.monotonic() + 60
        while not asked and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert asked, "the page never asked for its conversations"
        yield page
    finally:
        # A list still held (the test failed before letting it in) would keep close() waiting on its handler.
        context.unroute_all(behavior="ignoreErrors")
        context.close()


def test_the_printed_link_signs_in_once_and_signing_out_ends_the_session(web_server: WebServer, browser) -> None:
    match = re.search(r"http://\S+/signin\?code=[A-Za-z0-9_-]+", web_server.server.output())
    assert match, web_server.server.output()
    link = match.group(0).replace(f":{web_server.server.port}/", f":{web_server.proxy.port}/")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(link)
        expect(page).to_have_url(f"{web_server.base_url}/")
        expect(page.locator("#whoami")).to_have_text("local · local")
        cookies = {cookie["name"]: cookie for cookie in context.cookies()}
        assert cookies["turnlog_session"]["httpOnly"] and cookies["turnlog_session"]["sameSite"] == "Lax"
        assert not cookies["turnlog_csrf"]["httpOnly"]  # the page reads it to send the CSRF header

        page.get_by_role("button", name="Sign out").click()
        expect(page.locator("#signin-error")).to_have_text("You are signed out.")
        assert "turnlog_session" not in {cookie["name"] for cookie in context.cookies()}

        spent = page.goto(link)  # a link signs in once
        assert spent is not None and spent.status == 400
        expect(page.get_by_role("heading")).to_have_text("This sign-in link is not valid")
    finally:
        context.close()


def test_signing_in_with_a_token_then_a_question_streams_its_answer_with_markdown(web_server: WebServer, browser) -> None:
    user = web_server.server.new_user()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(web_server.base_url)
        page.get_by_label("Token").fill(user.token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#whoami")).to_have_text(f"{user.user_id} · {user.org_id}")

        ask(page, "Say **bold** and `code` now")
        streaming_with(page, "bold")  # words arrive while the answer is still being written
        answer = last_answer(page)
        expect(answer).to_have_attribute("data-state", "completed")
        expect(answer).to_have_attribute("aria-busy", "false")
        expect(answer.locator(".answer strong").first).to_have_text("bold")
        expect(answer.locator(".answer code").first).to_have_text("code")
        expect(page.get_by_role("status")).to_have_text("Answer complete.")
        expect(page.locator("#conversations a")).to_have_text(["Say **bold** and `code` now"])  # titled by the question
        expect(page.locator("#conversation-title")).to_have_text("Say **bold** and `code` now")
        screenshot(page, "web-chat-signed-in.png")
    finally:
        context.close()


def test_a_cut_connection_resumes_the_answer_without_repeating_text(web_server: WebServer, signed_in) -> None:
    page, user = signed_in
    ask(page, "Tell me about write-ahead logs")
    streaming_with(page, "write-ahead")
    assert web_server.proxy.cut() > 0  # every connection of the browser drops, the stream's included
    expect(page.get_by_role("status")).to_have_text("Connection lost: reconnecting…")

    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "completed")
    stored = stored_answer(web_server, user, page, int(answer.get_attribute("data-turn-seq")))
    assert words(answer.locator(".answer").inner_text()) == words(text_of(stored))
    run_id = answer.get_attribute("data-run-id")
    # The browser came back with the id of the last event it had: the server sent only what followed.
    resumed = re.search(
        rf"GET /v1/runs/{run_id}/stream(\?lastEventId=\d+)? HTTP/1.1\r\n(?:[^\r\n]+\r\n)*?last-event-id: \d+\r\n",
        web_server.proxy.sent_text(), re.IGNORECASE,
    )
    assert resumed, "no reconnection with Last-Event-ID went through the proxy"


def test_a_reload_mid_answer_picks_the_stream_up_again(web_server: WebServer, signed_in) -> None:
    page, user = signed_in
    ask(page, "Why do logs help recovery")
    streaming_with(page, "recovery")
    page.reload()

    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "completed")
    expect(page.locator("li.turn.user")).to_have_text(re.compile("Why do logs help recovery"))
    stored = stored_answer(web_server, user, page, int(answer.get_attribute("data-turn-seq")))
    assert words(answer.locator(".answer").inner_text()) == words(text_of(stored))


def test_stop_ends_the_answer_where_it_was(web_server: WebServer, signed_in) -> None:
    page, user = signed_in
    ask(page, "Count the tides slowly")
    streaming_with(page, "tides")
    page.get_by_role("button", name="Stop").click()

    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "cancelled")
    expect(answer.locator(".badge")).to_have_text("Stopped")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    stored = stored_answer(web_server, user, page, int(answer.get_attribute("data-turn-seq")))
    assert stored["state"] == "cancelled"
    assert words(answer.locator(".answer").inner_text()) == words(text_of(stored))  # the partial answer stays
    assert len(text_of(stored).split()) < 80


def test_regenerate_adds_a_sibling_answer_and_the_arrows_move_between_them(signed_in) -> None:
    page, _ = signed_in
    ask(page, "Name a colour")
    expect(last_answer(page)).to_have_attribute("data-state", "completed")
    first_seq = last_answer(page).get_attribute("data-turn-seq")

    page.get_by_role("button", name="Regenerate").click()
    expect(page.locator(".sibling-position")).to_have_text("2 / 2")
    expect(last_answer(page)).to_have_attribute("data-state", "completed")
    second_seq = last_answer(page).get_attribute("data-turn-seq")
    assert int(second_seq) > int(first_seq)

    page.get_by_role("button", name="Previous answer").click()
    expect(page.locator(".sibling-position")).to_have_text("1 / 2")
    expect(last_answer(page)).to_have_attribute("data-turn-seq", first_seq)
    expect(page.get_by_role("button", name="Previous answer")).to_be_disabled()
    page.get_by_role("button", name="Next answer").click()
    expect(page.locator(".sibling-position")).to_have_text("2 / 2")
    expect(last_answer(page)).to_have_attribute("data-turn-seq", second_seq)
    expect(page.get_by_role("button", name="Next answer")).to_be_disabled()
    expect(page.get_by_role("button", name="Previous answer")).to_be_focused()  # focus stays on the arrows


def test_a_conversation_started_before_the_first_list_arrives_stays_listed(web_server: WebServer, browser) -> None:
    """The page lists the conversations as it opens; a first message sent before that list arrives starts a
    conversation the list cannot hold yet, and the late list must not drop it (CI once saw an empty sidebar)."""
    held = []

    def hold(route: Route) -> None:
        """The first list is fetched at once (empty) but held back from the page; any later one goes through."""
        if held:
            route.continue_()
        else:
            held.append((route, route.fetch()))

    with opened_with_its_first_list_held(web_server, browser, hold) as page:
        ask(page, "What is a spring tide")
        listed = page.get_by_role("navigation", name="Conversations").get_by_role("link", name="What is a spring tide")
        expect(listed).to_be_visible()
        with page.expect_response(lambda response: "/v1/conversations?workspaceId=" in response.url):
            route, early_list = held[0]
            route.fulfill(response=early_list)  # the list from before the conversation existed
        page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 200))")  # the page has read it by now
        expect(listed).to_be_visible()


def test_a_conversation_is_renamed_in_place_and_keeps_its_name_after_a_reload(signed_in) -> None:
    page, _ = signed_in
    ask(page, "What is a neap tide")
    expect(last_answer(page)).to_have_attribute("data-state", "completed")
    page.get_by_role("button", name="Rename").click()
    title = page.get_by_role("textbox", name="Conversation title")
    expect(title).to_have_value("What is a neap tide")
    title.fill("Neap tides")
    title.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Neap tides")
    expect(page.get_by_role("navigation", name="Conversations").get_by_role("link", name="Neap tides")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Neap tides")


def test_a_tool_call_waits_for_approval_and_runs_once_approved(signed_in) -> None:
    page, _ = signed_in
    ask(page, "call:whoami({})")
    card = page.locator(".tool-card")
    expect(card).to_have_attribute("data-status", "awaiting_approval")
    expect(card).to_contain_text("whoami")
    expect(page.get_by_role("status")).to_have_text("whoami waits for your approval")
    card.get_by_role("button", name="Approve").click()

    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "completed", timeout=60_000)
    expect(card).to_have_attribute("data-status", "completed")
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)
    expect(answer.locator(".answer")).to_contain_text("whoami returned")


def test_an_error_shows_the_problem_detail(signed_in) -> None:
    page, _ = signed_in
    page.locator("#file-input").set_input_files(
        files=[{"name": "notes.bin", "mimeType": "application/octet-stream", "buffer": bytes(range(256)) * 4}]
    )
    problem = page.get_by_role("alert")
    expect(problem).to_contain_text("Could not upload notes.bin")
    expect(problem).to_contain_text("turnlog reads")  # the 415's detail: the formats it reads
    expect(page.locator(".attachment")).to_have_count(0)


def test_a_problem_met_while_the_page_opens_stays_shown(web_server: WebServer, browser) -> None:
    """An upload refused before the first list of conversations arrives, and that list failing: opening the page's
    empty conversation afterwards must not wipe either problem (CI once saw the upload's alert vanish)."""
    held: list[Route] = []
    with opened_with_its_first_list_held(web_server, browser, held.append) as page:
        page.locator("#file-input").set_input_files(
            files=[{"name": "notes.bin", "mimeType": "application/octet-stream", "buffer": bytes(range(256)) * 4}]
        )
        problems = page.get_by_role("alert")
        expect(problems.filter(has_text="Could not upload notes.bin")).to_be_visible()
        with page.expect_response(lambda response: "/v1/conversations?workspaceId=" in response.url):
            held[0].fulfill(status=500, content_type="application/problem+json",  # a 503 would be asked again
                            body='{"title": "Internal Server Error", "status": 500, "detail": "the read models failed"}')
        expect(page.get_by_role("main")).to_be_visible()
        expect(problems.filter(has_text="Could not list the conversations")).to_contain_text("the read models failed")
        expect(problems.filter(has_text="Could not upload notes.bin")).to_be_visible()


@pytest.mark.slow  # the first upload loads the embedding model
def test_an_uploaded_document_shows_its_progress_and_the_answer_cites_it(signed_in) -> None:
    page, _ = signed_in
    page.locator("#file-input").set_input_files(files=[{"name": "tides.md", "mimeType": "text/markdown", "buffer": TIDES_MD}])
    chip = page.locator(".attachment")
    expect(chip).to_contain_text("tides.md")
    # Generous: the first upload loads the embedding model, and at the end of the suite two Kafka fleets poll beside it.
    expect(chip).to_have_attribute("data-state", "indexed", timeout=300_000)
    expect(chip.locator(".attachment-state")).to_have_text("indexed")

    ask(page, "How long after the full moon do spring tides come?")
    expect(chip).to_have_count(0)  # attached to this turn, no longer waiting in the composer
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "completed", timeout=120_000)
    expect(answer.locator(".tool-card")).to_contain_text("file_search")
    citation = answer.locator(".citation")
    expect(citation.locator("summary")).to_have_text("[1] Tide notes")
    citation.locator("summary").click()
    expect(citation.locator("blockquote")).to_have_text("Spring tides follow the full moon by about two days.")
    expect(citation.locator(".where")).to_contain_text("Tide notes")
    screenshot(page, "web-chat-citation.png")
