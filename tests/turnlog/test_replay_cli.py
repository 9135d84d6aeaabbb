"""`turnlog replay` rebuilds the read models of a stopped server from its log."""

import subprocess
import sys
from pathlib import Path

import e2e_server

REPO_ROOT = Path(__file__).resolve().parents[2]


def replay(data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "turnlog.cli", "replay", "--data-dir", str(data_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


async def test_replay_rebuilds_read_models_that_answer_like_before(tmp_path: Path) -> None:
    server = e2e_server.TurnlogServer(data_dir=tmp_path / "data", answer_tokens=8).start()
    try:
        user = server.new_user()
        async with user.client() as client:
            conversation_id = await e2e_server.create_conversation(client, user.workspace)
            for question in ("first question", "second question"):
                accepted = await e2e_server.submit_turn(client, conversation_id, question)
                await e2e_server.wait_for_run(client, accepted["runId"])
            before = await e2e_server.list_turns(client, conversation_id)
            busy = replay(server.data_dir)
            assert busy.returncode == 1 and "stop it first" in busy.stderr
    finally:
        server.stop()

    rebuilt = replay(server.data_dir)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "1 conversations, 4 turns, 2 runs" in rebuilt.stdout
    assert "rebuilt snapshot tables: governance-snapshots from 0 events" in rebuilt.stdout  # conversations': Kafka's

    server.start()
    try:
        async with user.client(base_url=server.base_url) as client:
            assert await e2e_server.list_turns(client, conversation_id) == before
    finally:
        server.stop()
