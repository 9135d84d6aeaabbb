"""End to end over raw sockets: what one client may send and hold is bounded, and each refusal is problem+json.

One real `turnlog serve` for the module, with short timeouts so that slow clients are refused in seconds. Clients
connect from addresses of their own in 127.0.0.0/8 where the per-client connection cap must not see the others.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest

import e2e_server as e2e
from api.auth import load_or_create_secret
from tests.conftest import load_test_module

raw = load_test_module("raw_http", beside=Path(__file__))

HEAD_TIMEOUT_S = 1.5
BODY_GRACE_S = 1.0
MIN_BODY_BYTES_PER_S = 1000
MAX_PER_CLIENT = 12
MAX_TOKEN_TTL_S = 7 * 24 * 3600  # not the default: the setting must reach the API
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = e2e.TurnlogServer(
        data_dir=tmp_path_factory.mktemp("limits") / "data",
        extra_args=(
            "--request-head-timeout-s", str(HEAD_TIMEOUT_S),
            "--body-grace-s", str(BODY_GRACE_S),
            "--min-body-bytes-per-s", str(MIN_BODY_BYTES_PER_S),
            "--max-connections-per-client", str(MAX_PER_CLIENT),
            "--max-token-ttl-s", str(MAX_TOKEN_TTL_S),
        ),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def still_serving(server: e2e.TurnlogServer) -> None:
    assert server.process is not None and server.process.poll() is None, server.output()
    assert raw.serves(server.port), server.output()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# --- header size and count, URL length ----------------------------------------------------------------------------


def test_a_header_line_over_16_kib_is_431_naming_the_header(server) -> None:
    with raw.connect(server.port) as connection:
        connection.sendall(raw.request(headers=[("X-Oversized", "a" * (17 * 1024))]))
        problem = connection.read_response().problem(431, "request-header-fields-too-large")
        assert connection.closes() == b""  # and nothing after the answer: the connection is over
    assert problem["header"] == "X-Oversized" and problem["maxBytes"] == 16 * 1024
    assert "'X-Oversized'" in problem["detail"] and "16384 bytes" in problem["detail"]
    still_serving(server)


def test_headers_over_64_kib_in_all_are_431(server) -> None:
    headers = [(f"X-Part-{index}", "b" * (15 * 1024)) for index in range(5)]  # each line is allowed; together not

    problem = raw.exchange(server.port, raw.request(headers=headers)).problem(431, "request-header-fields-too-large")

    assert problem["maxBytes"] == 64 * 1024 and "65536 bytes in all" in problem["detail"]
    still_serving(server)


def test_more_than_100_header_lines_are_431(server) -> None:
    headers = [(f"X-Many-{index}", "1") for index in range(101)]

    problem = raw.exchange(server.port, raw.request(headers=headers)).problem(431, "request-header-fields-too-large")

    assert problem["maxHeaders"] == 100 and "more than 100 header lines" in problem["detail"]
    still_serving(server)


def test_a_url_over_8_kib_is_414(server) -> None:
    target = "/healthz?padding=" + "c" * (8 * 1024)

    problem = raw.exchange(server.port, raw.request(target=target)).problem(414, "uri-too-long")

    assert problem["maxBytes"] == 8 * 1024 and "request body" in problem["detail"]
    still_serving(server)


def test_requests_just_inside_every_limit_are_served(server) -> None:
    inside = [
        raw.request(target="/healthz?padding=" + "d" * (8 * 1024 - 40)),
        raw.request(headers=[("X-Long", "e" * (16 * 1024 - 100))]),
        raw.request(headers=[(f"X-Many-{index}", "1") for index in range(98)]),  # and Host: 99 lines
        raw.request(headers=[(f"X-Part-{index}", "f" * (15 * 1024)) for index in range(4)]),  # ~60 KiB in all
    ]
    for payload in inside:
        assert raw.exchange(server.port, payload).status == 200


def test_one_connection_may_send_any_number_of_requests_each_within_the_limits(server) -> None:
    with raw.connect(server.port) as connection:
        for _ in range(12):  # 12 x 40 KiB of headers on one kept-alive connection: each head is counted alone
            connection.sendall(raw.request(headers=[(f"X-Part-{index}", "g" * (10 * 1024)) for index in range(4)]))
            assert connection.read_response().status == 200


@pytest.mark.parametrize("control", [b"\x01", b"\x00", b"\x7f", b"\x1b[31m"])
def test_control_bytes_in_a_header_value_are_a_400_problem(server, control) -> None:
    payload = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: before" + control + b"after\r\n\r\n"

    problem = raw.exchange(server.port, payload).problem(400, "malformed-request")

    assert "control characters" in problem["detail"]
    still_serving(server)


def test_eight_concurrent_32_mib_headers_are_refused_without_the_server_growing(server) -> None:
    """The campaign's attack: 8 x 32 MB headers took the server from 444 to 709 MiB; now each costs 64 KiB."""
    pid = server.process.pid
    before = rss_bytes(pid)
    peak = before
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, rss_bytes(pid))
            sampling.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    attack = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + b"h" * (32 * MIB) + b"\r\n\r\n"
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(lambda _: raw.send_while_reading(server.port, attack), range(8)))
    finally:
        sampling.set()
        sampler.join()
    after = rss_bytes(pid)

    for response in responses:
        response.problem(431, "request-header-fields-too-large")
    assert peak - before < 48 * MIB, f"RSS grew from {before / MIB:.0f} MiB to a peak of {peak / MIB:.0f} MiB"
    assert after - before < 32 * MIB, f"RSS grew from {before / MIB:.0f} MiB to {after / MIB:.0f} MiB"
    still_serving(server)


# --- slow clients ---------------------------------------------------------------------------------------------------


def test_headers_that_trickle_in_are_408_after_the_head_timeout(server) -> None:
    started = time.monotonic()
    with raw.connect(server.port) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        deadline = started + raw.DEADLINE_S
        answered = False
        line = 0
        while not answered and time.monotonic() < deadline:  # a header line every 0.2 s, never the blank line
            try:
                connection.sendall(f"X-Trickle-{line}: 1\r\n".encode())
            except OSError:
                break  # the server has answered and closed
            line += 1
            answered = connection.readable(0.2)
        problem = connection.read_response().problem(408, "request-timeout")
    elapsed = time.monotonic() - started
    assert HEAD_TIMEOUT_S - 0.2 <= elapsed < HEAD_TIMEOUT_S + 5, elapsed
    assert f"within {HEAD_TIMEOUT_S:g} s" in problem["detail"]
    still_serving(server)


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server) -> None:
    started = time.monotonic()
    with raw.connect(server.port) as connection:
        assert connection.closes() == b""
    assert HEAD_TIMEOUT_S - 0.2 <= time.monotonic() - started < HEAD_TIMEOUT_S + 5


def test_a_body_that_trickles_in_is_408_and_the_api_logs_no_error(server) -> None:
    user = server.new_user()
    body = json.dumps({"workspaceId": user.workspace, "title": "x" * 100}).encode()
    head = raw.request(
        "POST", "/v1/conversations", headers=[("Authorization", f"Bearer {user.token}"), ("Content-Type", "application/json")],
        body=body,
    )[: -len(body)]
    started = time.monotonic()
    with raw.connect(server.port) as connection:
        connection.sendall(head)
        for byte in body:  # 5 bytes/s, far under 1000
            connection.sendall(bytes([byte]))
            if connection.readable(0.2):
                break
        problem = connection.read_response().problem(408, "request-timeout")
    assert time.monotonic() - started < BODY_GRACE_S + 5
    assert problem["minBytesPerS"] == MIN_BODY_BYTES_PER_S and "bytes/s" in problem["detail"]
    still_serving(server)
    assert "Traceback" not in server.output()


def test_a_body_sent_in_pieces_at_a_fair_rate_is_served(server) -> None:
    user = server.new_user()
    body = json.dumps({"workspaceId": user.workspace, "title": "in pieces"}).encode()
    payload = raw.request(
        "POST", "/v1/conversations", headers=[("Authorization", f"Bearer {user.token}"), ("Content-Type", "application/json")],
        body=body,
    )
    with raw.connect(server.port) as connection:
        connection.sendall(payload[: -len(body) // 2])
        time.sleep(0.5)  # not a wait for anything: the client's pause, inside the grace period, is the stimulus
        connection.sendall(payload[-len(body) // 2 :])
        response = connection.read_response()
    assert response.status == 201, response.body


# --- connections per client -----------------------------------------------------------------------------------------


def test_one_address_may_hold_12_connections_and_the_next_is_429_with_retry_after(server) -> None:
    source = "127.0.0.3"  # a client of its own: no other test's connections count against it
    held = [raw.connect(server.port, source=source) for _ in range(MAX_PER_CLIENT)]
    try:
        for connection in held:  # each is served, and stays open (keep-alive)
            connection.sendall(raw.request())
            assert connection.read_response().status == 200

        with raw.connect(server.port, source=source) as extra:
            response = extra.read_response()
            assert extra.closes() == b""
        problem = response.problem(429, "too-many-connections")
        assert response.headers["retry-after"] == "5"
        assert problem["maxConnections"] == MAX_PER_CLIENT and "keep-alive" in problem["detail"]
        assert raw.serves(server.port, source="127.0.0.4")  # another address is not affected

        held.pop().close()
        deadline = time.monotonic() + raw.DEADLINE_S
        while not raw.serves(server.port, source=source):  # once the server has seen the close
            assert time.monotonic() < deadline, "a closed connection still counts against its client"
    finally:
        for connection in held:
            connection.close()


# --- token lifetime ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lifetime_s", [MAX_TOKEN_TTL_S + 60, 10**30 * 365 * 24 * 3600, 10**400], ids=["a minute over", "year 10^30", "10^400 s"]
)
def test_a_token_that_lives_longer_than_the_maximum_is_a_401_naming_it(server, lifetime_s) -> None:
    now = int(time.time())
    claims = {"iss": "turnlog", "sub": "u_long", "org": "org_long", "workspaces": ["ws_long"], "iat": now, "exp": now + lifetime_s}
    token = jwt.encode(claims, load_or_create_secret(server.data_dir), algorithm="HS256")

    response = raw.exchange(server.port, raw.request(target="/v1/conversations", headers=[("Authorization", f"Bearer {token}")]))

    assert response.status == 401 and response.headers["content-type"] == raw.PROBLEM_MEDIA_TYPE
    problem = json.loads(response.body)
    assert problem["maxTokenTtlS"] == MAX_TOKEN_TTL_S and "604800 s (7 days)" in problem["detail"]
    still_serving(server)


def test_a_token_inside_the_maximum_is_accepted(server) -> None:
    now = int(time.time())
    claims = {"iss": "turnlog", "sub": "u_ok", "org": "org_ok", "workspaces": ["ws_ok"], "iat": now, "exp": now + MAX_TOKEN_TTL_S}
    token = jwt.encode(claims, load_or_create_secret(server.data_dir), algorithm="HS256")

    response = raw.exchange(server.port, raw.request(target="/v1/conversations", headers=[("Authorization", f"Bearer {token}")]))

    assert response.status == 200, response.body
