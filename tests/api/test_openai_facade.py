"""End to end: the official `openai` SDK against a real `turnlog serve` (scripted engine) at `/openai/v1`.

Each call must be a turnlog conversation and run like any other: listed at /v1/conversations, its turns holding
the answer, and invisible to another tenant.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from openai import AsyncOpenAI, BadRequestError, NotFoundError, RateLimitError

import e2e_server as e2e
from api.openai.chat_request import parse_chat_request
from api.openai.errors import UnsupportedParameter
from api.openai.models import served_models
from e2e_server import list_turns, looks_like_scripted_answer_prefix, text_of_turn
from inference.pools import PoolConfig, PoolsConfig

MODEL = "interactive"  # a server without a pools file serves one pool, "interactive"
DEADLINE_S = 60.0  # generous: the CI box is small and loaded


# --- the request checks, without a server -----------------------------------------------------------------


def chat(**fields: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


def test_fields_at_their_neutral_value_or_null_are_accepted():
    request = parse_chat_request(chat(n=1, logprobs=False, temperature=None, user="u1", stream=True))
    assert request.parts == ("hi",) and request.stream and not request.include_usage


@pytest.mark.parametrize(
    ("document", "param"),
    [
        (chat(stream_options={"include_usage": True}), "stream_options"),
        (chat(stream=True, stream_options={"include_obfuscation": False}), "stream_options.include_obfuscation"),
        (chat(messages=[{"role": "tool", "content": "42", "tool_call_id": "c1"}]), "messages[0].role"),
        (chat(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]), "messages[1].role"),
        (chat(messages=[{"role": "assistant", "content": None, "tool_calls": []}, {"role": "user", "content": "x"}]), "messages[0].tool_calls"),
        (chat(messages=[]), "messages"),
        (chat(frobnicate=1), "frobnicate"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_its_path(document, param):
    with pytest.raises(UnsupportedParameter) as raised:
        parse_chat_request(document)
    assert raised.value.param == param


def test_a_long_transcript_is_cut_into_parts_the_turn_accepts():
    request = parse_chat_request(chat(messages=[{"role": "user", "content": "x" * 70_000}]))
    assert [len(part) for part in request.parts] == [32_000, 32_000, 6_000]


# --- over HTTP ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e.TurnlogServer]:
    server = e2e.TurnlogServer(data_dir=tmp_path_factory.mktemp("openai") / "data", token_delay_ms=5, answer_tokens=12)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def sdk(server: e2e.TurnlogServer, user: e2e.User, **headers: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=server.base_url + "/openai/v1", api_key=user.token, timeout=DEADLINE_S, max_retries=0,
        default_headers=headers or None,
    )


async def test_lists_the_served_models(server):
    async with sdk(server, server.new_user()) as client:
        models = await client.models.list()
        assert [model.id for model in models.data] == [MODEL]
        assert (await client.models.retrieve(MODEL)).id == MODEL


async def test_a_completion_is_a_conversation_whose_turns_hold_the_answer(server):
    user = server.new_user()
    async with sdk(server, user) as client:
        completion = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "tell me about event logs"}]
        )
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    [choice] = completion.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert looks_like_scripted_answer_prefix(choice.message.content, "tell me about event logs"), choice.message.content
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens

    run_id = completion.id.removeprefix("chatcmpl-")
    async with user.client() as rest, server.new_user().client() as stranger:
        conversations = (await rest.get("/v1/conversations")).json()["conversations"]
        [conversation] = conversations
        assert conversation["workspaceId"] == user.workspace
        assert conversation["title"] == "tell me about event logs"
        turns = await list_turns(rest, conversation["conversationId"])
        assert [turn["role"] for turn in turns] == ["user", "assistant"]
        assert text_of_turn(turns[0]) == "tell me about event logs"
        assert text_of_turn(turns[1]) == choice.message.content
        assert turns[1]["runId"] == run_id
        # Another tenant sees neither the conversation nor the run.
        assert (await stranger.get("/v1/conversations")).json()["conversations"] == []
        e2e.assert_problem(await stranger.get(f"/v1/conversations/{conversation['conversationId']}"), 404)
        e2e.assert_problem(await stranger.get(f"/v1/runs/{run_id}"), 404)


async def test_a_streamed_completion_ends_with_its_usage(server):
    user = server.new_user()
    async with sdk(server, user) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "stream this answer"}], stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [chunk for chunk in chunks if chunk.choices]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
    assert looks_like_scripted_answer_prefix(text, "stream this answer"), text
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert [chunk.usage for chunk in with_choices] == [None] * len(with_choices)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0

    async with user.client() as rest:
        [conversation] = (await rest.get("/v1/conversations")).json()["conversations"]
        turns = await list_turns(rest, conversation["conversationId"])
        assert text_of_turn(turns[-1]) == text


async def test_streams_follow_the_run_on_either_log(fast_server):
    """On Kafka too (a fleet of two API instances): each stream follows its run from the run's first record."""
    async with sdk(fast_server, fast_server.new_user()) as client:
        for attempt in range(3):
            prompt = f"stream number {attempt}"
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompt}], stream=True
            )
            text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
            assert looks_like_scripted_answer_prefix(text, prompt), text
            events = [event async for event in await client.responses.create(model=MODEL, input=prompt, stream=True)]
            [completed] = [event for event in events if event.type == "response.completed"]
            assert looks_like_scripted_answer_prefix(completed.response.output_text, prompt)


async def test_earlier_messages_are_folded_into_the_turn_as_a_transcript(server):
    user = server.new_user()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a log?"},
        {"role": "assistant", "content": "An append-only sequence."},
        {"role": "user", "content": [{"type": "text", "text": "And a projection?"}]},
    ]
    async with sdk(server, user) as client:
        completion = await client.chat.completions.create(model=MODEL, messages=messages)
    assert completion.choices[0].message.content
    async with user.client() as rest:
        [conversation] = (await rest.get("/v1/conversations")).json()["conversations"]
        turns = await list_turns(rest, conversation["conversationId"])
    transcript = text_of_turn(turns[0])
    assert "[system]\nBe brief." in transcript
    assert "[assistant]\nAn append-only sequence." in transcript
    assert transcript.endswith("[user]\nAnd a projection?")


async def test_an_unknown_model_is_a_404_in_openais_shape(server):
    async with sdk(server, server.new_user()) as client:
        with pytest.raises(NotFoundError) as raised:
            await client.chat.completions.create(model="gpt-nonexistent", messages=[{"role": "user", "content": "hi"}])
    error = raised.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert error["type"] == "invalid_request_error"
    assert "gpt-nonexistent" in error["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 0.2}, "temperature"),
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
async def test_an_unsupported_field_is_a_400_naming_it(server, fields, param):
    async with sdk(server, server.new_user()) as client:
        with pytest.raises(BadRequestError) as raised:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], **fields)
    error = raised.value.body
    assert error["param"] == param
    assert param in error["message"]


async def test_an_image_part_is_refused_by_its_path(server):
    async with sdk(server, server.new_user()) as client:
        with pytest.raises(BadRequestError) as raised:
            await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
            )
    assert raised.value.body["param"] == "messages[0].content[0].type"


async def test_the_workspace_must_be_named_when_the_token_has_several(server):
    user = server.new_user(workspaces=[e2e.unique("ws"), e2e.unique("ws")])
    messages = [{"role": "user", "content": "which workspace?"}]
    async with sdk(server, user) as client:
        with pytest.raises(BadRequestError) as raised:
            await client.chat.completions.create(model=MODEL, messages=messages)
        assert raised.value.body["code"] == "workspace_required"
    async with sdk(server, user, **{"X-Turnlog-Workspace": user.workspaces[1]}) as client:
        await client.chat.completions.create(model=MODEL, messages=messages)
    async with user.client() as rest:
        [conversation] = (await rest.get("/v1/conversations")).json()["conversations"]
        assert conversation["workspaceId"] == user.workspaces[1]


async def test_errors_come_in_openais_shape_over_plain_http(server):
    async with httpx.AsyncClient(base_url=server.base_url + "/openai/v1", timeout=DEADLINE_S) as client:
        unauthenticated = await client.get("/models")
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["error"]["type"] == "authentication_error"
        user = server.new_user()
        headers = {"Authorization": f"Bearer {user.token}", "X-Turnlog-Workspace": e2e.unique("ws")}
        forbidden = await client.post(
            "/chat/completions", headers=headers, json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        )
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["type"] == "permission_error"


# --- the Responses API ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e.TurnlogServer]:
    """Runs of ~10 s: long enough to cancel one midway."""
    server = e2e.TurnlogServer(data_dir=tmp_path_factory.mktemp("openai_slow") / "data", token_delay_ms=50, answer_tokens=200)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_response_is_a_run_and_reads_back_the_same(server):
    user = server.new_user()
    async with sdk(server, user) as client:
        response = await client.responses.create(model=MODEL, input="what is a projection", instructions="Be brief.")
        assert response.status == "completed"
        assert response.model == MODEL
        assert response.output_text
        assert response.usage.output_tokens > 0
        again = await client.responses.retrieve(response.id)
        assert again.status == "completed" and again.output_text == response.output_text
        async with sdk(server, server.new_user()) as stranger:
            with pytest.raises(NotFoundError):
                await stranger.responses.retrieve(response.id)
    async with user.client() as rest:
        run = await e2e.get_run(rest, response.id)
        assert run["status"] == "completed"
        turns = await list_turns(rest, run["conversationId"])
        assert text_of_turn(turns[0]).endswith("[user]\nwhat is a projection")
        assert text_of_turn(turns[1]) == response.output_text


async def test_a_streamed_response_resumes_from_the_log(server):
    async with sdk(server, server.new_user()) as client:
        stream = await client.responses.create(model=MODEL, input="stream a response", stream=True)
        events = [event async for event in stream]
        types = [event.type for event in events]
        assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
        assert types[-4:] == [
            "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
        ]
        assert [event.sequence_number for event in events] == list(range(len(events)))
        text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
        assert looks_like_scripted_answer_prefix(text, "stream a response"), text
        completed = events[-1].response
        assert completed.output_text == text and completed.usage.output_tokens > 0

        resumed = await client.responses.retrieve(completed.id, stream=True, starting_after=5)
        tail = [event async for event in resumed]
        assert [(event.type, event.sequence_number) for event in tail] == [
            (event.type, event.sequence_number) for event in events[6:]
        ]
        assert tail[-1].response.output_text == text


async def test_previous_response_id_continues_its_conversation(server):
    user = server.new_user()
    async with sdk(server, user) as client:
        first = await client.responses.create(model=MODEL, input="first question")
        second = await client.responses.create(model=MODEL, input="second question", previous_response_id=first.id)
        assert second.previous_response_id == first.id
        assert looks_like_scripted_answer_prefix(second.output_text, "second question"), second.output_text
    async with user.client() as rest:
        [conversation] = (await rest.get("/v1/conversations")).json()["conversations"]
        turns = await list_turns(rest, conversation["conversationId"])
        assert [text_of_turn(turn) for turn in turns] == ["first question", first.output_text, "second question", second.output_text]


async def test_an_unsupported_response_field_is_a_400_naming_it(server):
    async with sdk(server, server.new_user()) as client:
        with pytest.raises(BadRequestError) as raised:
            await client.responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    assert raised.value.body["param"] == "tools"


async def test_a_background_response_can_be_cancelled(slow_server):
    async with sdk(slow_server, slow_server.new_user()) as client:
        started = await client.responses.create(model=MODEL, input="a long answer please", background=True)
        assert started.status == "in_progress"
        cancelled = await client.responses.cancel(started.id)
        assert cancelled.status == "cancelled"
        assert (await client.responses.retrieve(started.id)).status == "cancelled"


def test_the_models_are_the_pools_and_the_models_their_engines_serve():
    pools = PoolsConfig(
        pools=(
            PoolConfig(
                name="fast", engine="openai-compatible", engine_url="http://engine:8000/v1", engine_model="Qwen/Qwen3-8B",
                capacity=2, context_tokens=4096,
            ),
            PoolConfig(name="batch", engine="scripted", capacity=2, context_tokens=4096),
        )
    )
    assert [(model.model_id, model.pool) for model in served_models(pools)] == [
        ("fast", "fast"), ("batch", "batch"), ("Qwen/Qwen3-8B", "fast"),
    ]


# --- governance applies as to any turn ---------------------------------------------------------------------

STRICT_TIERS = """
[tenants]
default_tier = "strict"

[tiers.strict]
start_balance = 1000000
[tiers.strict.user]
requests_per_minute = 1
"""


@pytest.fixture(scope="module")
def governed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e.TurnlogServer]:
    base = tmp_path_factory.mktemp("openai_governed")
    tiers = base / "tiers.toml"
    tiers.write_text(STRICT_TIERS)
    server = e2e.TurnlogServer(data_dir=base / "data", token_delay_ms=5, answer_tokens=12, extra_args=("--tiers", str(tiers)))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_call_over_the_rate_limit_is_a_429_in_openais_shape(governed_server):
    messages = [{"role": "user", "content": "count me"}]
    async with sdk(governed_server, governed_server.new_user()) as client:
        first = await client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
        assert "x-ratelimit-remaining-requests" in first.headers
        with pytest.raises(RateLimitError) as raised:
            await client.chat.completions.create(model=MODEL, messages=messages)
    assert raised.value.status_code == 429
    assert raised.value.body["type"] == "rate_limit_error"
    assert raised.value.response.headers.get("retry-after")
