"""schemathesis against a live server, over every operation of /openapi.json: no 5xx, and every answer matches the
document (declared status codes and content types, bodies valid against their schemas, `Allow` on 405s, ...).

The run uses every check with the exceptions below, each a rule a JSON Schema cannot state; the
server is the embedded default with the scripted engine, the caller an administrator with one workspace.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import e2e_server as e2e

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MIN_CASES = 2000
EXAMPLES_PER_OPERATION = 30
WORKERS = 6  # most cases are 404s, several of which wait ~1.3 s for a record that may be on its way (api/access.py)

# Rules a JSON Schema cannot say, so schema-valid requests that break them are refused, and how the run accepts it.
ALL_BUT = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
CONFIG = f"""
# Every check, named here rather than by `--checks all`: the command line's choice overrides the per-operation
# exceptions below (schemathesis 4.32), which then never held.
[checks]
enabled = true

# Stateful sequences send valid requests: the per-operation allowances below do not reach that phase's checks
# (schemathesis 4.32 judges its negative cases without the operation's config), and invalid input is what the
# examples, coverage and fuzzing phases test, operation by operation.
[phases.stateful.generation]
mode = "positive"

# The facade's last message must be the user's, with some text (JSON Schema cannot index an array from its end).
[[operations]]
include-operation-id = ["openaiCreateChatCompletion", "openaiCreateResponse"]
checks.positive_data_acceptance.expected-statuses = {json.dumps([*ALL_BUT, "400"])}

# `since` must come before `until`.
[[operations]]
include-operation-id = "listSafetyDecisions"
checks.positive_data_acceptance.expected-statuses = {json.dumps([*ALL_BUT, "400"])}

# An upload is read by its bytes: random bytes are not a PDF, DOCX, HTML, Markdown or text file (415). Its form
# fields are all text, so a "wrong type" in a field is sent as valid text: negative cases can be valid ones.
[[operations]]
include-operation-id = "uploadFile"
checks.positive_data_acceptance.expected-statuses = {json.dumps([*ALL_BUT, "415"])}
checks.negative_data_rejection.enabled = false

# Attachments (a search's fileIds) must be files the caller sees in the workspace (422 names each that is not).
[[operations]]
include-operation-id = ["submitTurn", "regenerate", "search"]
checks.positive_data_acceptance.expected-statuses = {json.dumps([*ALL_BUT, "422"])}

# Signing out clears the session's cookies; a caller that also sends a bearer token is still that token.
# use_after_free judges the read that follows a DELETE (schemathesis 4.32): the allowance is the reading operation's.
[[operations]]
include-operation-id = ["deleteSession", "currentSession"]
checks.use_after_free.enabled = false

# A revoked API key stays readable (as `revoked`), for the record: DELETE revokes, it does not erase.
[[operations]]
include-operation-id = ["revokeApiKey", "getApiKey"]
checks.use_after_free.enabled = false
"""

# CPython 3.11 can fail a compile to an AST when two threads make one at once ("AST constructor recursion depth
# mismatch"); schemathesis's workers are threads, and in them hypothesis parses lambdas' sources to describe
# strategies and anyio's lazy importer compiles its own source (the first worker to reach the ASGI transport imports
# it). `ast.parse` calls `compile`, so serializing every AST compile covers both.
RUNNER = """
import ast, builtins, sys, threading
_lock, _compile = threading.Lock(), builtins.compile
def _serialized_compile(source, filename, mode, flags=0, *args, **kwargs):
    if not flags & ast.PyCF_ONLY_AST:
        return _compile(source, filename, mode, flags, *args, **kwargs)
    with _lock:
        return _compile(source, filename, mode, flags, *args, **kwargs)
builtins.compile = _serialized_compile
from schemathesis.cli import schemathesis
sys.argv[0] = "schemathesis"
sys.exit(schemathesis())
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e.TurnlogServer]:
    server = e2e.TurnlogServer(data_dir=tmp_path_factory.mktemp("schemathesis") / "data", answer_tokens=4)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_schemathesis_finds_nothing_over_every_operation(server: e2e.TurnlogServer, tmp_path: Path) -> None:
    admin = server.new_user(role="admin")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    report = tmp_path / "report.json"
    # The first search loads the embedding model: seconds, tens of them on a loaded machine. Load it before the
    # generated requests, which are each given 60 s (schemathesis's default of 10 s is for a quiet machine).
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {admin.token}"}, timeout=300) as client:
        client.post("/v1/search", json={"workspaceId": admin.workspace, "query": "warm up"}).raise_for_status()
    completed = subprocess.run(
        [
            sys.executable, "-c", RUNNER, "--config-file", str(config), "run", f"{server.base_url}/openapi.json",
            "--header", f"Authorization: Bearer {admin.token}",
            "--max-examples", str(EXAMPLES_PER_OPERATION), "--workers", str(WORKERS), "--request-timeout", "60",
            "--report", "json", "--report-json-path", str(report), "--output-truncate", "false",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=840,
    )
    summary = json.loads(report.read_text()) if report.exists() else {}
    (tmp_path / "schemathesis.txt").write_text(completed.stdout + completed.stderr)
    found = completed.stdout.partition("=== FAILURES ===")[2] or completed.stdout.partition("=== ERRORS ===")[2]
    assert completed.returncode == 0, f"schemathesis found problems:\n{found[:30000] or completed.stdout[-20000:]}\n{completed.stderr[-3000:]}"
    assert summary["operations"]["tested"] == summary["operations"]["total"], summary["operations"]
    generated = summary["test_cases"]["generated"]
    assert generated >= MIN_CASES, f"only {generated} cases"
    print(f"schemathesis: {generated} cases over {summary['operations']['tested']} operations in {summary['running_time']:.0f} s")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/runs/{run_id}/stream", None),
        ("POST", "/openai/v1/responses", {"model": "interactive", "input": "hi", "stream": True}),
        ("POST", "/openai/v1/chat/completions", {"model": "interactive", "messages": [{"role": "user", "content": "hi"}], "stream": True}),
    ],
)
def test_every_streamed_event_matches_the_document(server: e2e.TurnlogServer, method: str, path: str, body) -> None:
    """Each SSE event of a whole stream, checked by schemathesis's own response checks against /openapi.json (the
    run above reaches a stream only when its stateful phase happens to, so once a stream's events were documented
    as a string and CI caught it by chance)."""
    import schemathesis

    user = server.new_user()
    path_parameters = {}
    if "{run_id}" in path:
        async def finished_run() -> str:
            async with user.client() as client:
                conversation_id = await e2e.create_conversation(client, user.workspace)
                accepted = await e2e.submit_turn(client, conversation_id, "stream me")
                await e2e.wait_for_run(client, accepted["runId"])
                return accepted["runId"]

        path_parameters["run_id"] = asyncio.run(finished_run())
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    sent = {"body": body} if body is not None else {}
    case = schema[path][method].Case(
        path_parameters=path_parameters, headers={"Authorization": f"Bearer {user.token}"}, **sent
    )
    response = case.call(timeout=60)
    assert response.status_code == 200 and response.headers["content-type"][0].startswith("text/event-stream")
    assert response.text.count("data:") >= 3, response.text
    case.validate_response(response)
