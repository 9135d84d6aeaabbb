"""Retention over HTTP: a recent run's stream resumes; once the run is older than the retention period its deltas are
trimmed from the log and its stream answers 410 problem+json, while its answer stays readable."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import e2e_server as e2e
from e2e_server import TurnlogServer, assert_problem, create_conversation, read_stream, submit_turn

RETENTION_S = 8


def run_records(log_path: Path, run_id: str) -> int:
    with sqlite3.connect(f"file:{log_path}?mode=ro", uri=True) as log:
        return log.execute("SELECT count(*) FROM records WHERE topic = 'run-events' AND key = ?", (run_id,)).fetchone()[0]


async def test_a_recent_stream_resumes_and_an_expired_one_answers_410(tmp_path: Path) -> None:
    server = TurnlogServer(
        data_dir=tmp_path / "data", token_delay_ms=1, answer_tokens=20,
        extra_args=["--run-events-retention-s", str(RETENTION_S), "--trim-interval-s", "0.5"],
    ).start()
    try:
        user = server.new_user()
        async with user.client() as client:
            conversation_id = await create_conversation(client, user.workspace)
            accepted = await submit_turn(client, conversation_id, "keep the answer, drop the deltas")
            run_id = accepted["runId"]
            whole = await read_stream(client, run_id)
            resumed = await read_stream(client, run_id, last_event_id="3")
            assert [(event.id, event.data) for event in resumed] == [(event.id, event.data) for event in whole[3:]]
            answer = e2e.delta_text(whole)
            streamed_records = run_records(server.data_dir / "log.db", run_id)

            deadline = time.monotonic() + RETENTION_S + 60
            while True:
                response = await client.get(f"/v1/runs/{run_id}/stream")
                if response.status_code == 410:
                    break
                assert response.status_code == 200 and time.monotonic() < deadline, response.text
                await asyncio.sleep(0.5)
            problem = assert_problem(response, 410)
            assert problem["runId"] == run_id and problem["retentionSeconds"] == RETENTION_S
            assert f"GET /v1/conversations/{conversation_id}/turns" in problem["detail"]

            # The OpenAI-compatible facade rebuilds a response's text from the deltas: expired there too, never truncated.
            facade = await client.get(f"/openai/v1/responses/{run_id}")
            assert facade.status_code == 410 and facade.json()["error"]["code"] == "gone", facade.text

            while run_records(server.data_dir / "log.db", run_id) >= streamed_records:  # the trimmer's next pass
                assert time.monotonic() < deadline, "the run's deltas were never trimmed"
                await asyncio.sleep(0.2)
            run = await e2e.get_run(client, run_id)
            assert run["status"] == "completed" and e2e.text_of_turn({"content": run["result"]["content"]}) == answer
            turns = await e2e.list_turns(client, conversation_id)
            assert e2e.text_of_turn(turns[-1]) == answer

        # Kafka deletes an expired segment of run-events whole, the run's first record too (the embedded log keeps
        # it): with the server stopped, the run's records go as they would there. The run is expired, not unknown.
        server.stop()
        with sqlite3.connect(server.data_dir / "log.db") as log:
            log.execute("DELETE FROM records WHERE topic = 'run-events' AND key = ?", (run_id,))
        server.start()
        async with user.client() as client:
            run = await e2e.get_run(client, run_id)
            assert run["status"] == "completed" and e2e.text_of_turn({"content": run["result"]["content"]}) == answer
            problem = assert_problem(await client.get(f"/v1/runs/{run_id}/stream"), 410)
            assert problem["runId"] == run_id and problem["conversationId"] == conversation_id
        other = server.new_user()  # and for anyone else it is still no run at all
        async with other.client() as client:
            assert_problem(await client.get(f"/v1/runs/{run_id}"), 404)
            assert_problem(await client.get(f"/v1/runs/{run_id}/stream"), 404)
    finally:
        server.stop()
