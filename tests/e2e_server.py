"""End-to-end harness: a real `turnlog serve` process on a free port, and HTTP/SSE helpers for it.

Nothing here is faked: each `TurnlogServer` is a separate Python process running uvicorn with the
scripted engine on its own data directory, and the helpers talk to it over real HTTP and SSE with
`httpx.AsyncClient`, decoding streams with the product's own client-side `kernel.sse.iter_sse`.

Fixtures built on this module live in `tests/conftest.py` (tests run with `--import-mode=importlib`,
so that conftest registers this module as `e2e_server` in `sys.modules` for test modules to import).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from api.auth import issue_token, load_or_create_secret
from kernel.sse import ServerSentEvent, iter_sse

REPO_ROOT = Path(__file__).resolve().parent.parent
TERMINAL_STREAM_EVENTS = frozenset({"assistant.completed", "run.cancelled", "run.failed"})
TERMINAL_RUN_STATUSES = frozenset({"completed", "cancelled", "failed"})
STARTUP_DEADLINE_S = 30.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str, *, timeout_s: float = 90.0) -> None:
    """Until `check()` holds, asking again every 0.1 s, or fail naming `what`: for state another process writes
    (a ClickHouse table, a projection), which no event of this one announces."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unique(prefix: str) -> str:
    """A fresh resource id (letters, digits, '_' only) so tests never share users, orgs or workspaces."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class ServerFailedToStart(RuntimeError):
    pass


@dataclass(kw_only=True)
class TurnlogServer:
    """One `turnlog serve` process (scripted engine unless told); `start()` waits for `GET /healthz`."""

    data_dir: Path
    engine: str = "scripted"
    token_delay_ms: float = 0.0
    answer_tokens: int = 20
    run_lease_s: float | None = None
    max_upload_mb: float | None = None
    startup_deadline_s: float = STARTUP_DEADLINE_S
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # added to this process's environment (OTEL_*, ...)
    port: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        command = [
            sys.executable, "-m", "turnlog.cli", "serve",
            "--engine", self.engine,
            "--data-dir", str(self.data_dir),
            "--port", str(port),
            "--token-delay-ms", str(self.token_delay_ms),
            "--answer-tokens", str(self.answer_tokens),
            "--log-level", "warning",
        ]
        if self.run_lease_s is not None:
            command += ["--run-lease-s", str(self.run_lease_s)]
        if self.max_upload_mb is not None:
            command += ["--max-upload-mb", str(self.max_upload_mb)]
        return command + list(self.extra_args)

    def start(self) -> TurnlogServer:
        """Start on a fresh free port (a new one every time, e.g. after a crash) and wait until healthy."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        last_error: Exception | None = None
        for _attempt in range(3):  # a free port can be taken between probing it and binding it
            port = free_port()
            self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server-{port}.log"
            log_file = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
            try:
                self.process = subprocess.Popen(
                    self.command(port),
                    cwd=REPO_ROOT,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                    start_new_session=True,
                )
            finally:
                log_file.close()
            self.port = port
            try:
                self._wait_healthy()
                return self
            except ServerFailedToStart as error:
                last_error = error
                self.kill()
        raise ServerFailedToStart(f"turnlog serve did not start: {last_error}")

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_deadline_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerFailedToStart(f"exited with {self.process.returncode}:\n{self.output()}")
            try:
                response = httpx.get(f"{self.base_url}/healthz", timeout=1.0)
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise ServerFailedToStart(f"no healthy /healthz within {self.startup_deadline_s}s:\n{self.output()}")

    def output(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `grace_s`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown code runs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    # --- principals -----------------------------------------------------------------------------

    def token(self, *, user_id: str, org_id: str, workspace_ids: Sequence[str], role: str = "member") -> str:
        # Same secret file as the server (`turnlog token` does exactly this).
        secret = load_or_create_secret(self.data_dir)
        return issue_token(secret, user_id=user_id, org_id=org_id, workspace_ids=list(workspace_ids), role=role)

    def new_user(
        self, *, org_id: str | None = None, workspaces: Sequence[str] | None = None, user_id: str | None = None,
        role: str = "member",
    ) -> User:
        """A principal with a token; fresh ids for whatever is not given."""
        org_id = org_id or unique("org")
        workspaces = list(workspaces) if workspaces else [unique("ws")]
        user_id = user_id or unique("user")
        return User(
            server=self,
            user_id=user_id,
            org_id=org_id,
            workspaces=tuple(workspaces),
            token=self.token(user_id=user_id, org_id=org_id, workspace_ids=workspaces, role=role),
        )


@dataclass(frozen=True, kw_only=True)
class User:
    server: TurnlogServer | TurnlogFleet
    user_id: str
    org_id: str
    workspaces: tuple[str, ...]
    token: str

    @property
    def workspace(self) -> str:
        return self.workspaces[0]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, *, base_url: str | None = None) -> httpx.AsyncClient:
        transport = None if base_url is not None else getattr(self.server, "transport", lambda: None)()
        return httpx.AsyncClient(
            base_url=base_url or self.server.base_url,
            headers=self.headers,
            timeout=httpx.Timeout(15.0),
            transport=transport,
        )


# --- HTTP helpers ---------------------------------------------------------------------------------


def text_input(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": text}]


async def create_conversation(client: httpx.AsyncClient, workspace_id: str, title: str | None = "e2e") -> str:
    body: dict[str, object] = {"workspaceId": workspace_id}
    if title is not None:
        body["title"] = title
    response = await client.post("/v1/conversations", json=body)
    deadline = time.monotonic() + 30.0
    # A fleet still joining its consumer groups answers 503 + Retry-After ("not decided in time"): a client asks
    # again. The first command may still be decided later: an unused conversation, harmless here.
    while response.status_code == 503 and time.monotonic() < deadline:
        await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 1.0))
        response = await client.post("/v1/conversations", json=body)
    assert response.status_code == 201, response.text
    return response.json()["conversationId"]


async def submit_turn(
    client: httpx.AsyncClient,
    conversation_id: str,
    text: str,
    *,
    idempotency_key: str | None = None,
    response_mode: str | None = None,
    tools: Sequence[str] | None = None,
) -> dict:
    body: dict[str, object] = {"input": text_input(text)}
    if response_mode is not None:
        body["responseMode"] = response_mode
    if tools is not None:
        body["tools"] = list(tools)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    response = await client.post(f"/v1/conversations/{conversation_id}/turns", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


async def indexed_file(
    client: httpx.AsyncClient, workspace_id: str, filename: str, data: bytes, *, acl: str | None = None, deadline_s: float = 90.0
) -> str:
    """Upload a file, then wait until it is indexed (searchable); a 503 (a projection catching up) is asked again."""
    fields = {"workspaceId": workspace_id, **({"acl": acl} if acl else {})}
    response = await client.post("/v1/files", files={"file": (filename, data)}, data=fields)
    assert response.status_code == 201, response.text
    file_id = response.json()["fileId"]
    deadline = time.monotonic() + deadline_s
    while True:
        response = await client.get(f"/v1/files/{file_id}")
        assert time.monotonic() < deadline, response.text
        if response.status_code == 503:  # a projection catching up (Retry-After): a client waits and asks again
            await asyncio.sleep(0.5)
            continue
        assert response.status_code == 200, response.text
        state = response.json()["ingestionState"]
        if state == "indexed":
            return file_id
        assert state != "failed", response.json()
        await asyncio.sleep(0.05)


async def list_turns(client: httpx.AsyncClient, conversation_id: str, **params: object) -> list[dict]:
    response = await client.get(f"/v1/conversations/{conversation_id}/turns", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()["turns"]


async def get_run(client: httpx.AsyncClient, run_id: str, *, patience_s: float = 10.0) -> dict:
    """The run, as a client that honours `503` + `Retry-After` (a projection catching up) would get it."""
    deadline = time.monotonic() + patience_s
    response = await client.get(f"/v1/runs/{run_id}")
    while response.status_code == 503 and time.monotonic() < deadline:
        await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 1.0))
        response = await client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def wait_for_run(client: httpx.AsyncClient, run_id: str, *, timeout_s: float = 15.0) -> dict:
    """Poll `GET /v1/runs/{id}` until the run is terminal; fail with its last state otherwise."""
    deadline = time.monotonic() + timeout_s
    run = await get_run(client, run_id)
    while run["status"] not in TERMINAL_RUN_STATUSES:
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout_s}s: {run}")
        await asyncio.sleep(0.05)
        run = await get_run(client, run_id)
    return run


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, run_id: str, *, last_event_id: str | None = None
) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
    """The decoded SSE events of a run's stream; leaving the block closes the connection."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with client.stream("GET", f"/v1/runs/{run_id}/stream", headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode(errors="replace")
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers.get("cache-control") == "no-cache"
        events = iter_sse(response.aiter_lines())
        try:
            yield events
        finally:
            await events.aclose()


async def read_stream(
    client: httpx.AsyncClient,
    run_id: str,
    *,
    last_event_id: str | None = None,
    timeout_s: float = 20.0,
) -> list[ServerSentEvent]:
    """Every event until the server closes the stream (a TimeoutError if it does not in time)."""
    events: list[ServerSentEvent] = []
    try:
        async with asyncio.timeout(timeout_s):
            async with open_stream(client, run_id, last_event_id=last_event_id) as stream:
                async for event in stream:
                    events.append(event)
    except TimeoutError:
        raise AssertionError(
            f"the stream of run {run_id} (Last-Event-ID {last_event_id!r}) was still open after {timeout_s}s;"
            f" events received: {[(event.id, event.event) for event in events]}"
        ) from None
    return events


def delta_text(events: Sequence[ServerSentEvent]) -> str:
    return "".join(event.json()["text"] for event in events if event.event == "assistant.delta")


def text_of_turn(turn: dict) -> str:
    return "".join(part["text"] for part in turn["content"] if part.get("type") == "text")


def turn_by_seq(turns: Sequence[dict], turn_seq: int) -> dict:
    matches = [turn for turn in turns if turn["turnSeq"] == turn_seq]
    assert len(matches) == 1, f"expected exactly one turn {turn_seq}, got {matches} in {turns}"
    return matches[0]


def assert_problem(response: httpx.Response, status: int) -> dict:
    """An RFC 9457 problem+json response with the given status; returns its body."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].split(";")[0].strip() == "application/problem+json", response.headers
    problem = response.json()
    for member in ("type", "title", "status", "detail"):
        assert member in problem, f"problem lacks {member!r}: {problem}"
    assert problem["status"] == status
    assert isinstance(problem["detail"], str) and problem["detail"], problem
    return problem


def looks_like_scripted_answer_prefix(text: str, prompt: str) -> bool:
    """Whether `text` is a prefix of what the scripted engine answers to `prompt`.

    The scripted engine answers ` [digest]` then the prompt's words, one per token, cycled; the
    digest depends on the whole transcript, so only its shape is checked here.
    """
    words = prompt.split()
    if not text.startswith(" [") or "]" not in text:
        return False
    digest, _, rest = text[2:].partition("]")
    if len(digest) != 8 or any(c not in "0123456789abcdef" for c in digest):
        return False
    expected = "".join(f" {words[i % len(words)]}" for i in range(len(rest.split()) + 1))
    return expected.startswith(rest)


# --- a fleet on Kafka -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class TurnlogWorker:
    """One `turnlog worker --role ...` process (no HTTP: it is ready once its groups have joined)."""

    data_dir: Path
    roles: Sequence[str]
    args: Sequence[str] = ()
    name: str = "worker"
    # The process's stable name (--instance-id; default: `name`): a worker started again under it fences its
    # killed predecessor, as a supervisor's restart does, which on Tansu is what unblocks every reader (docs/kafka.md).
    instance_id: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # added to this process's environment (OTEL_*, ...)
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None

    def start(self) -> TurnlogWorker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path = self.data_dir.parent / f"{self.name}-{'-'.join(self.roles)}.log"
        command = [
            sys.executable, "-m", "turnlog.cli", "worker", "--data-dir", str(self.data_dir), "--log-level", "warning",
            "--instance-id", self.instance_id or self.name,
        ]
        for role in self.roles:
            command += ["--role", role]
        with open(log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [*command, *self.args], cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env}, start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    output = TurnlogServer.output

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class _RoundRobin(httpx.AsyncBaseTransport):
    """Sends each request to the next API instance: a load balancer with no affinity at all."""

    def __init__(self, base_urls: Sequence[str]) -> None:
        self._targets = [httpx.URL(url) for url in base_urls]
        self._next = 0
        self._transport = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self._targets[self._next % len(self._targets)]
        self._next += 1
        request.url = request.url.copy_with(host=target.host, port=target.port)
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._transport.aclose()


@dataclass(kw_only=True)
class TurnlogFleet:
    """Two API-only instances and separate worker processes on one Kafka log and one ClickHouse.

    It offers what tests use of a `TurnlogServer`: `new_user()`, `token()`, `data_dir`, and a
    `base_url` that alternates between the instances; clients made by `User.client()` alternate on
    every request, so a turn posted to one instance is streamed and read from the other.
    """

    data_dir: Path
    log_url: str
    store_url: str
    token_delay_ms: float = 0.0
    answer_tokens: int = 20
    inference_workers: int = 1
    run_lease_s: float | None = None
    max_upload_mb: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # added to every process's environment (OTEL_*, ...)
    apis: list[TurnlogServer] = field(default_factory=list)
    workers: list[TurnlogWorker] = field(default_factory=list)
    _next: int = 0

    def start(self) -> TurnlogFleet:
        shared = ("--log", self.log_url, "--store", self.store_url, "--engine", "scripted")
        if self.run_lease_s is not None:
            shared += ("--run-lease-s", str(self.run_lease_s))
        engine = ("--token-delay-ms", str(self.token_delay_ms), "--answer-tokens", str(self.answer_tokens))
        env = self.env
        self.workers = [
            TurnlogWorker(data_dir=self.data_dir, roles=("decider", "projector", "watchdog"), args=shared, env=env),
            # The prompt builder loads the embedding model on the first turn that searches documents:
            # in a process of its own, that load never slows the decider or the projector.
            TurnlogWorker(data_dir=self.data_dir, roles=("prompt-builder",), args=shared, name="prompt-builder", env=env),
            *(
                TurnlogWorker(
                    data_dir=self.data_dir, roles=("inference",), args=(*shared, *engine), name=f"inference{index}", env=env
                )
                for index in range(self.inference_workers)
            ),
            # Blobs and the search index default to the shared data dir, which the ingester reads too.
            TurnlogWorker(data_dir=self.data_dir, roles=("ingester",), args=shared, name="ingester", env=env),
        ]
        for worker in self.workers:
            worker.start()
        # The instances share the data dir only for the token-signing secret; the log and the
        # read models are Kafka and ClickHouse.
        self.apis = [
            TurnlogServer(
                data_dir=self.data_dir, max_upload_mb=self.max_upload_mb,
                extra_args=(*shared, "--role", "api", "--instance-id", f"api{index}"), env=self.env,
            ).start()
            for index in range(2)
        ]
        return self

    def stop(self) -> None:
        for api in self.apis:
            api.stop()
        for worker in self.workers:
            worker.stop()

    @property
    def base_url(self) -> str:
        self._next += 1
        return self.apis[self._next % len(self.apis)].base_url

    def transport(self) -> httpx.AsyncBaseTransport:
        return _RoundRobin([api.base_url for api in self.apis])

    def output(self) -> str:
        return "\n".join(api.output() for api in self.apis)

    def diagnostics(self) -> str:
        """Each process's state and the end of its log: attached to a failing test's report (tests/conftest.py),
        since a fleet's failure on CI can only be understood from what its processes printed."""
        parts = []
        for name, process in [*((f"api:{api.port}", api) for api in self.apis), *((w.name, w) for w in self.workers)]:
            popen = process.process
            state = "not started" if popen is None else (f"exited {popen.returncode}" if popen.poll() is not None else "running")
            parts.append(f"--- {name} (pid {popen.pid if popen else '-'}, {state}) ---\n{process.output()[-3000:]}")
        return "\n".join(parts)

    token = TurnlogServer.token
    new_user = TurnlogServer.new_user
