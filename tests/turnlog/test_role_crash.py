"""A role that dies inside `turnlog serve` takes the process down with a non-zero status, rather than leaving an API
that accepts turns nobody will answer.

The failure is real: the server's log (its SQLite file) starts refusing the inference worker's claims, as a failing
disk or a corrupted file would (a trigger stands in for the disk). The worker's claim fails, the worker's task dies,
and the process must log it and exit non-zero, while everything else still works.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import e2e_server as e2e
from e2e_server import create_conversation


def refuse_inference_claims(log_path) -> None:
    """From now on, the log refuses any append that commits an inference worker group's progress."""
    connection = sqlite3.connect(log_path, timeout=30)
    try:
        connection.execute(
            "CREATE TRIGGER refuse_inference_claims BEFORE INSERT ON consumer_offsets "
            "WHEN NEW.group_id LIKE 'inference-workers.%' BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END"
        )
        connection.commit()
    finally:
        connection.close()


def test_a_role_that_dies_stops_turnlog_serve_with_a_non_zero_status(tmp_path) -> None:
    server = e2e.TurnlogServer(data_dir=tmp_path / "data", token_delay_ms=1, answer_tokens=5).start()
    try:
        user = server.new_user()
        refuse_inference_claims(server.data_dir / "log.db")

        async def post_a_turn() -> None:
            async with user.client() as client:
                conversation_id = await create_conversation(client, user.workspace)
                response = await client.post(
                    f"/v1/conversations/{conversation_id}/turns", json={"input": e2e.text_input("anyone there?")}
                )
                assert response.status_code == 202, response.text  # the decider and prompt builder still work

        asyncio.run(post_a_turn())
        assert server.process is not None
        deadline = time.monotonic() + 60
        while server.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        status = server.process.poll()
        output = server.output()
        assert status is not None, f"turnlog serve kept serving without its inference worker:\n{output}"
        assert status != 0, output
        assert "role inference-worker-interactive stopped" in output, output
        assert "turnlog serve stopped because role inference-worker-interactive stopped" in output, output
    finally:
        server.kill()
