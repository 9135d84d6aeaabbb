"""End to end over real HTTP: a `turnlog serve --pools FILE` routes runs between pools and falls back when one fails.

The cheaper pool's engine is an OpenAI-compatible server that is not there (a closed port): its
runs fail as the engine being unavailable, its breaker opens, and the next runs go to the other
pool, the fallback shown on the run.
"""

from __future__ import annotations

import socket

import pytest

from e2e_server import TurnlogServer, create_conversation, get_run, read_stream, submit_turn, wait_for_run


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # released at once: nothing listens there


@pytest.fixture(scope="module")
def pools_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("routing")
    pools_file = directory / "pools.toml"
    pools_file.write_text(f'''
[breaker]
consecutive_failures = 2
cool_down_s = 600

[[pools]]
name = "cheap"
engine = "openai-compatible"
engine_url = "http://127.0.0.1:{closed_port()}/v1"
engine_model = "gone"
context_tokens = 8192
cost_per_1k_tokens = 0.01
capacity = 4

[[pools]]
name = "steady"
engine = "scripted"
context_tokens = 8192
cost_per_1k_tokens = 0.05
capacity = 4
''')
    server = TurnlogServer(data_dir=directory / "data", extra_args=("--pools", str(pools_file))).start()
    yield server
    server.stop()


async def test_runs_go_to_the_cheapest_pool_until_its_breaker_opens_then_fall_back(pools_server) -> None:
    user = pools_server.new_user()
    async with user.client() as client:
        failed = []
        for attempt in range(2):
            conversation_id = await create_conversation(client, user.workspace)
            accepted = await submit_turn(client, conversation_id, f"question {attempt}")
            run = await wait_for_run(client, accepted["runId"])
            failed.append(run)
        for run in failed:
            assert run["status"] == "failed", run
            assert run["route"]["pool"] == "cheap" and run["route"]["fallbackFrom"] is None
            assert run["route"]["sizeClass"] == "short" and run["route"]["promptTokens"] > 0

        conversation_id = await create_conversation(client, user.workspace)
        accepted = await submit_turn(client, conversation_id, "and now?")
        events = await read_stream(client, accepted["runId"])
        assert events[-1].event == "assistant.completed", [e.event for e in events]
        run = await get_run(client, accepted["runId"])
        assert run["route"]["pool"] == "steady" and run["route"]["fallbackFrom"] == "cheap"
        assert "skipped cheap (breaker open)" in run["route"]["reason"]
