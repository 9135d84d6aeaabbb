"""The default engine end to end: the real SmolLM2 model on the CPU, behind a real server."""

from collections.abc import Iterator

import pytest

import e2e_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cpu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e_server.TurnlogServer]:
    server = e2e_server.TurnlogServer(
        data_dir=tmp_path_factory.mktemp("cpu") / "data",
        engine="cpu",
        extra_args=("--max-output-tokens", "24"),
        startup_deadline_s=180,  # the model loads in ~15 s on an idle 2-core machine
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_the_cpu_model_streams_a_real_answer_token_by_token(cpu_server: e2e_server.TurnlogServer) -> None:
    user = cpu_server.new_user()
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        accepted = await e2e_server.submit_turn(client, conversation_id, "What is the capital of France?")
        events = await e2e_server.read_stream(client, accepted["runId"], timeout_s=120)
        turns = await e2e_server.list_turns(client, conversation_id)

    kinds = [event.event for event in events]
    assert kinds[0] == "run.started" and kinds[-1] == "assistant.completed"
    deltas = [event for event in events if event.event == "assistant.delta"]
    assert len(deltas) >= 2  # streamed, not delivered in one piece
    answer = e2e_server.delta_text(events)
    assert answer.strip() and "<|im_" not in answer  # real text, chat-template markers stripped
    completed = events[-1].json()
    assert 0 < completed["usage"]["outputTokens"] <= 24 and completed["usage"]["promptTokens"] > 5
    assert e2e_server.text_of_turn(e2e_server.turn_by_seq(turns, 2)) == answer
