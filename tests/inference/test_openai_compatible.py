"""The OpenAI-compatible engine against a real local server: request shape, usage, disconnects that
stop the server generating, and every failure typed (the conformance suite runs over it too)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from inference.engine import (
    ChatMessage,
    EngineRejected,
    EngineUnavailable,
    GenerationFinished,
    GenerationRequest,
    PromptTooLong,
    TokenText,
    ToolCallProposal,
    ToolSpec,
)
from inference.openai_compatible import (
    ChunkDelta,
    OpenAICompatibleEngine,
    StreamEnded,
    ToolCallAssembly,
    ToolCallFragment,
    Usage,
    completion_chunks,
    error_from_body,
)

STORY = "Write a long story about a dragon who learns to bake bread."
LONG = 400


def chat(*contents: str, request_id: str = "run-1", max_output_tokens: int = 12) -> GenerationRequest:
    roles = ("user", "assistant")
    return GenerationRequest(
        request_id=request_id,
        messages=tuple(ChatMessage(role=roles[i % 2], content=text) for i, text in enumerate(contents)),
        max_output_tokens=max_output_tokens,
    )


async def started(server, **options) -> OpenAICompatibleEngine:
    engine = OpenAICompatibleEngine(**{"base_url": server.base_url, "model": server.model, **options})
    await engine.start()
    return engine


async def run(engine: OpenAICompatibleEngine, request: GenerationRequest) -> tuple[list[str], GenerationFinished]:
    *pieces, finished = [event async for event in engine.generate(request)]
    assert all(isinstance(piece, TokenText) for piece in pieces)
    assert isinstance(finished, GenerationFinished)
    return [piece.text for piece in pieces], finished


def unique(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


# --- the request and the stream ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
async def test_streams_a_chat_completion_with_usage_whatever_the_base_url_form(chat_server, suffix: str) -> None:
    chat_server.behaviour.api_key = "sk-test"
    engine = await started(chat_server, base_url=chat_server.base_url + suffix, api_key="sk-test")
    request_id = unique("run-shape")
    try:
        pieces, finished = await run(engine, chat("Name a colour.", request_id=request_id))
    finally:
        await engine.close()

    record = chat_server.wait_for(request_id)
    assert record.body["model"] == chat_server.model
    assert record.body["messages"] == [{"role": "user", "content": "Name a colour."}]
    assert record.body["stream"] is True
    assert record.body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert record.body["max_tokens"] == 12
    assert record.headers["authorization"] == "Bearer sk-test"
    assert len(pieces) == record.tokens_sent == 12
    assert (finished.finish_reason, finished.output_tokens) == ("length", 12)
    assert finished.prompt_tokens == 10  # 3 words in a 4-token frame, and the 3-token generation prompt


async def test_a_complete_answer_stops_and_counts_its_end_of_turn_token(chat_server) -> None:
    chat_server.behaviour.answer_tokens = 5
    engine = await started(chat_server, sampling={"temperature": 0.0})
    request_id = unique("run-stop")
    try:
        pieces, finished = await run(engine, chat("Say hello.", request_id=request_id, max_output_tokens=50))
    finally:
        await engine.close()

    assert len(pieces) == 5
    assert (finished.finish_reason, finished.output_tokens) == ("stop", 6)
    assert chat_server.wait_for(request_id).body["temperature"] == 0.0


async def test_finished_generations_give_their_connections_back(chat_server) -> None:
    """Many more answers, one after another, than the engine has connections: none waits for a lost one."""
    chat_server.behaviour.answer_tokens = 3
    engine = await started(chat_server, max_concurrency=2, connect_timeout_s=2.0)
    try:
        for index in range(12):
            pieces, finished = await run(engine, chat("Say hi.", request_id=unique(f"run-pool-{index}"), max_output_tokens=8))
            assert len(pieces) == 3 and finished.finish_reason == "stop"
    finally:
        await engine.close()


async def test_usage_counts_the_prefix_cache_hits_of_a_follow_up_turn(chat_server) -> None:
    question = f"{unique('topic')} Name a colour."
    engine = await started(chat_server)
    try:
        first_pieces, first = await run(engine, chat(question, request_id=unique("run-a")))
        _, second = await run(engine, chat(question, "".join(first_pieces), "And a fruit?", request_id=unique("run-b")))
    finally:
        await engine.close()

    assert first.cached_tokens < first.prompt_tokens  # a new conversation shares only the template's opening
    assert second.cached_tokens == first.prompt_tokens  # the whole first prompt is a prefix of the second


async def test_without_usage_from_the_server_each_chunk_counts_as_a_token(chat_server) -> None:
    chat_server.behaviour.send_usage = False
    engine = await started(chat_server, continuous_usage_stats=False)
    request_id = unique("run-no-usage")
    try:
        pieces, finished = await run(engine, chat("Name a colour.", request_id=request_id))
    finally:
        await engine.close()

    assert chat_server.wait_for(request_id).body["stream_options"] == {"include_usage": True}
    assert (finished.output_tokens, finished.prompt_tokens) == (len(pieces), 0)


async def test_each_token_is_handed_on_before_the_rest_of_a_burst_is_read(chat_server) -> None:
    """A server that sends a whole answer at once (a fast model, a cache hit): the first token goes out as soon as
    its chunk is parsed, not after every chunk that arrived with it (the run's first delta waits for nothing)."""
    chat_server.behaviour.token_delay_s = 0.0
    chat_server.behaviour.first_token_delay_s = 0.05  # the reader waits, then the chunks land together
    engine = await started(chat_server)
    request_id = unique("run-burst")
    queued_behind: list[int] = []
    try:
        async for event in engine.generate(chat(STORY, request_id=request_id, max_output_tokens=LONG)):
            if isinstance(event, TokenText):
                queued_behind.append(engine._streams[request_id].items.qsize())
    finally:
        await engine.close()

    assert len(queued_behind) == LONG
    assert max(queued_behind) <= 1, f"chunks parsed ahead of the tokens handed on: up to {max(queued_behind)}"


# --- tool calls --------------------------------------------------------------------------------

WEATHER = ToolSpec(
    name="weather",
    description="The weather in a city.",
    parameters='{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}',
)
CLOCK = ToolSpec(name="clock", description="The time in a city.", parameters='{"type": "object", "properties": {}}')
OSLO = '{"city": "Oslo", "when": "tomorrow morning"}'
BERGEN = '{"city": "Bergen", "units": "metric"}'


def offered(question: str, *, request_id: str, tools: tuple[ToolSpec, ...] = (WEATHER, CLOCK),
            max_output_tokens: int = 64) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id, messages=(ChatMessage(role="user", content=question),),
        max_output_tokens=max_output_tokens, tools=tools,
    )


async def test_a_request_offers_its_tools_and_sends_calls_and_results_in_openai_shape(chat_server) -> None:
    engine = await started(chat_server)
    request_id = unique("run-tools-shape")
    messages = (
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Weather in Oslo?"),
        ChatMessage(role="assistant", content="", tool_calls=(
            ToolCallProposal(call_id="call_a", name="weather", arguments='{"city": "Oslo"}'),
        )),
        ChatMessage(role="tool", content='{"sky": "clear"}', tool_call_id="call_a"),
    )
    try:
        pieces, finished = await run(engine, GenerationRequest(
            request_id=request_id, messages=messages, max_output_tokens=32, tools=(WEATHER,),
        ))
    finally:
        await engine.close()

    body = chat_server.wait_for(request_id).body
    assert body["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }}]
    assert body["tool_choice"] == "auto"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"sky": "clear"}'},
    ]
    # The scripted "model" behind the server reports the result it was given.
    assert "".join(pieces).strip() == 'weather returned {"sky": "clear"}.'
    assert (finished.finish_reason, finished.tool_calls) == ("stop", ())


async def test_a_request_without_tools_sends_no_tools_and_no_tool_choice(chat_server) -> None:
    engine = await started(chat_server)
    request_id = unique("run-no-tools")
    try:
        await run(engine, chat("call:weather({}) Name a colour.", request_id=request_id))
    finally:
        await engine.close()

    body = chat_server.wait_for(request_id).body
    assert "tools" not in body and "tool_choice" not in body
    assert body["messages"] == [{"role": "user", "content": "call:weather({}) Name a colour."}]


@pytest.mark.parametrize("style", ["sglang", "vllm"])
async def test_fragmented_arguments_of_a_call_are_assembled(chat_server, style: str) -> None:
    chat_server.behaviour.stream_style = style
    chat_server.behaviour.argument_fragment_chars = 3
    engine = await started(chat_server)
    request_id = unique(f"run-fragments-{style}")
    try:
        pieces, finished = await run(engine, offered(f"call:weather({OSLO})", request_id=request_id))
    finally:
        await engine.close()

    record = chat_server.wait_for(request_id)
    assert record.tokens_sent == 1 + -(-len(OSLO) // 3)  # the name, then the arguments three characters a chunk
    assert pieces == []
    assert finished.finish_reason == "tool_calls"
    assert finished.tool_calls == (ToolCallProposal(call_id="call_1", name="weather", arguments=OSLO),)
    assert finished.output_tokens == record.tokens_sent + 1  # from the usage chunk at the end: + the end of turn
    assert finished.prompt_tokens > 0


@pytest.mark.parametrize("interleaved", [False, True])
async def test_two_calls_in_one_step_come_apart_in_index_order(chat_server, interleaved: bool) -> None:
    chat_server.behaviour.interleave_tool_calls = interleaved
    chat_server.behaviour.argument_fragment_chars = 5
    engine = await started(chat_server)
    try:
        _, finished = await run(engine, offered(
            f"call:weather({OSLO}) and call:weather({BERGEN}).", request_id=unique("run-two-calls"),
        ))
    finally:
        await engine.close()

    assert finished.finish_reason == "tool_calls"
    assert finished.tool_calls == (
        ToolCallProposal(call_id="call_1", name="weather", arguments=OSLO),
        ToolCallProposal(call_id="call_2", name="weather", arguments=BERGEN),
    )


async def test_text_before_the_calls_still_streams(chat_server) -> None:
    chat_server.behaviour.text_before_tool_calls = "Let me look that up."
    engine = await started(chat_server)
    try:
        pieces, finished = await run(engine, offered("call:clock({})", request_id=unique("run-text-first")))
    finally:
        await engine.close()

    assert "".join(pieces) == "Let me look that up."
    assert finished.tool_calls == (ToolCallProposal(call_id="call_1", name="clock", arguments="{}"),)


async def test_calls_streamed_under_a_stop_still_finish_as_tool_calls(chat_server) -> None:
    chat_server.behaviour.tool_calls_finish_reason = "stop"
    engine = await started(chat_server)
    try:
        _, finished = await run(engine, offered(f"call:weather({OSLO})", request_id=unique("run-says-stop")))
    finally:
        await engine.close()

    assert finished.finish_reason == "tool_calls" and len(finished.tool_calls) == 1


async def test_calls_without_ids_get_ids_that_are_stable_per_step_and_new_in_the_next(chat_server) -> None:
    chat_server.behaviour.tool_call_ids = False
    engine = await started(chat_server)
    question = ChatMessage(role="user", content="call:clock({}) call:weather({})")
    later = (question,) * 3  # a later step of the same run holds more messages
    try:
        _, first = await run(engine, offered(question.content, request_id="run-no-ids"))
        _, again = await run(engine, offered(question.content, request_id="run-no-ids"))
        _, next_step = await run(engine, GenerationRequest(
            request_id="run-no-ids", messages=later, max_output_tokens=64, tools=(WEATHER, CLOCK),
        ))
    finally:
        await engine.close()

    first_ids = [call.call_id for call in first.tool_calls]
    assert [call.name for call in first.tool_calls] == ["clock", "weather"]
    assert len(set(first_ids)) == 2 and all(call_id.startswith("call_") for call_id in first_ids)
    assert [call.call_id for call in again.tool_calls] == first_ids
    assert not {call.call_id for call in next_step.tool_calls} & set(first_ids)


async def test_a_step_cut_short_in_the_middle_of_a_call_proposes_nothing(chat_server) -> None:
    chat_server.behaviour.argument_fragment_chars = 2
    engine = await started(chat_server)
    try:
        pieces, finished = await run(engine, offered(
            f"call:weather({OSLO})", request_id=unique("run-cut-call"), max_output_tokens=5,
        ))
    finally:
        await engine.close()

    assert pieces == []
    assert (finished.finish_reason, finished.tool_calls, finished.output_tokens) == ("length", (), 5)


async def test_without_tools_on_offer_the_trigger_is_just_text(chat_server) -> None:
    engine = await started(chat_server)
    try:
        pieces, finished = await run(engine, offered(
            "call:weather({})", request_id=unique("run-trigger-no-tools"), tools=(), max_output_tokens=4,
        ))
    finally:
        await engine.close()

    assert pieces and finished.tool_calls == () and finished.finish_reason == "length"


async def test_a_tool_whose_schema_is_not_json_is_rejected_before_anything_is_sent(chat_server) -> None:
    broken = ToolSpec(name="broken", description="", parameters="{not json")
    engine = await started(chat_server)
    request_id = unique("run-bad-schema")
    try:
        with pytest.raises(EngineRejected, match="broken"):
            await run(engine, offered("hi", request_id=request_id, tools=(broken,)))
    finally:
        await engine.close()

    assert request_id not in chat_server.records


# --- cancellation: the client hangs up, the server stops ---------------------------------------


@pytest.mark.parametrize("how", ["aclose", "cancel", "abort"])
async def test_leaving_a_stream_disconnects_and_the_server_stops_generating(chat_server, how: str) -> None:
    chat_server.behaviour.token_delay_s = 0.005
    engine = await started(chat_server)
    request_id = unique(f"run-{how}")
    received: list = []
    first_piece = asyncio.Event()

    async def consume() -> None:
        async for event in engine.generate(chat(STORY, request_id=request_id, max_output_tokens=LONG)):
            received.append(event)
            first_piece.set()
            if how == "aclose":
                return  # leaving the loop closes the stream
            if how == "abort" and len(received) == 1:
                assert engine.abort(request_id) is True

    consumer = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first_piece.wait(), timeout=5)
        if how == "cancel":
            consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        record = await asyncio.to_thread(chat_server.wait_for, request_id)
        sent = record.tokens_sent
        await asyncio.sleep(0.05)  # ten token delays
    finally:
        await engine.close()

    assert record.outcome == "client disconnected"
    assert record.tokens_sent == sent < LONG
    if how == "abort":
        finished = received[-1]
        assert isinstance(finished, GenerationFinished) and finished.finish_reason == "cancelled"
        assert len(received) - 1 <= finished.output_tokens <= sent
        assert finished.prompt_tokens > 0  # from the usage on every chunk
    assert engine.abort(request_id) is False


async def test_an_abort_during_a_silent_prefill_ends_the_run_at_once(chat_server) -> None:
    chat_server.behaviour.first_token_delay_s = 5.0
    engine = await started(chat_server)
    request_id = unique("run-prefill")
    stream = engine.generate(chat(STORY, request_id=request_id, max_output_tokens=LONG))
    try:
        first = asyncio.ensure_future(anext(stream))
        await asyncio.to_thread(lambda: _until(lambda: request_id in chat_server.records))
        started_at = time.monotonic()
        assert engine.abort(request_id) is True
        finished = await asyncio.wait_for(first, timeout=2)
        aborted_in = time.monotonic() - started_at
    finally:
        await stream.aclose()
        await engine.close()

    assert isinstance(finished, GenerationFinished)
    assert (finished.finish_reason, finished.output_tokens) == ("cancelled", 0)
    assert aborted_in < 0.5
    record = chat_server.wait_for(request_id)
    assert (record.outcome, record.tokens_sent) == ("client disconnected", 0)


def _until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


# --- failures, typed ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
async def test_server_errors_and_overload_are_engine_unavailable(chat_server, status: int) -> None:
    chat_server.behaviour.fail_next = [(status, {"error": {"message": "scheduler is down", "type": "X", "code": status}})]
    engine = await started(chat_server)
    try:
        with pytest.raises(EngineUnavailable, match="scheduler is down") as raised:
            await run(engine, chat("Say hello.", request_id=unique("run-5xx")))
        _, after = await run(engine, chat("Say hello.", request_id=unique("run-after")))  # the engine still works
    finally:
        await engine.close()

    assert raised.value.status_code == status
    assert after.output_tokens > 0


async def test_an_unknown_model_or_bad_key_is_rejected(chat_server) -> None:
    engine = await started(chat_server, model="no-such-model")
    try:
        with pytest.raises(EngineRejected, match="does not exist") as unknown:
            await run(engine, chat("Say hello.", request_id=unique("run-model")))
    finally:
        await engine.close()
    chat_server.behaviour.api_key = "sk-right"
    engine = await started(chat_server, api_key="sk-wrong")
    try:
        with pytest.raises(EngineRejected, match="Invalid API key") as unauthorised:
            await run(engine, chat("Say hello.", request_id=unique("run-key")))
    finally:
        await engine.close()

    assert (unknown.value.status_code, unauthorised.value.status_code) == (404, 401)


async def test_a_prompt_longer_than_the_context_is_prompt_too_long(chat_server) -> None:
    chat_server.behaviour.context_tokens = 15
    engine = await started(chat_server)
    try:
        with pytest.raises(PromptTooLong) as refused:
            await run(engine, chat(STORY, request_id=unique("run-long")))
    finally:
        await engine.close()

    assert (refused.value.prompt_tokens, refused.value.context_tokens) == (19, 15)


async def test_an_answer_that_would_overflow_the_context_is_asked_again_for_the_room_left(chat_server) -> None:
    chat_server.behaviour.context_tokens = 40
    engine = await started(chat_server)
    request_id = unique("run-room")
    try:
        pieces, finished = await run(engine, chat("Name a colour.", request_id=request_id, max_output_tokens=100))
    finally:
        await engine.close()

    room = 40 - finished.prompt_tokens
    assert chat_server.wait_for(request_id).body["max_tokens"] == room
    assert (finished.finish_reason, finished.output_tokens, len(pieces)) == ("length", room, room)


async def test_a_server_that_stays_silent_past_the_read_timeout_is_unavailable(chat_server) -> None:
    chat_server.behaviour.first_token_delay_s = 2.0
    engine = await started(chat_server, read_timeout_s=0.2)
    try:
        with pytest.raises(EngineUnavailable, match="read timeout: nothing from the server for 0.2 s"):
            await run(engine, chat("Say hello.", request_id=unique("run-silent")))
    finally:
        await engine.close()


async def test_a_server_that_is_not_there_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the engine connects: nothing listens
    engine = OpenAICompatibleEngine(base_url=f"http://127.0.0.1:{port}", model="m", connect_timeout_s=1.0)
    await engine.start()
    try:
        with pytest.raises(EngineUnavailable, match="Cannot connect to host 127.0.0.1"):
            await run(engine, chat("Say hello."))
    finally:
        await engine.close()


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("drop_connection_after_tokens", "ClientPayloadError: Response payload is not completed"),
        ("end_body_after_tokens", "ended before a finish_reason"),
        ("error_chunk_after_tokens", "Scheduler hit an internal error"),
    ],
)
async def test_a_stream_cut_short_is_unavailable_after_the_text_it_gave(chat_server, behaviour: str, message: str) -> None:
    setattr(chat_server.behaviour, behaviour, 3)
    engine = await started(chat_server)
    received: list = []
    try:
        with pytest.raises(EngineUnavailable, match=message):
            async for event in engine.generate(chat(STORY, request_id=unique("run-cut"), max_output_tokens=LONG)):
                received.append(event)
    finally:
        await engine.close()

    assert len(received) == 3 and all(isinstance(event, TokenText) for event in received)


async def test_closing_the_engine_fails_what_is_in_flight(chat_server) -> None:
    engine = await started(chat_server)
    stream = engine.generate(chat(STORY, request_id=unique("run-closing"), max_output_tokens=LONG))
    try:
        await anext(stream)
        await engine.close()
        with pytest.raises(EngineUnavailable, match="closed"):
            async for _ in stream:
                pass
    finally:
        await stream.aclose()


async def test_generate_before_start_and_a_duplicate_request_id_are_errors(chat_server) -> None:
    engine = OpenAICompatibleEngine(base_url=chat_server.base_url, model=chat_server.model)
    with pytest.raises(RuntimeError, match="before start"):
        await anext(engine.generate(chat("Say hello.")))
    await engine.start()
    first = engine.generate(chat(STORY, request_id="run-twice", max_output_tokens=LONG))
    try:
        await anext(first)
        with pytest.raises(EngineRejected, match="already generating"):
            await run(engine, chat("Say hello.", request_id="run-twice"))
    finally:
        await first.aclose()
        await engine.close()


# --- the pure layers: SSE chunks and error bodies ----------------------------------------------


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_chunks_are_read_from_sse_lines_to_done() -> None:
    chunks = [
        chunk
        async for chunk in completion_chunks(lines(
            ": keep-alive comment",
            "",
            'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}',
            "",
            'data: {"choices": [{"index": 0, "delta": {"content": "Hel"},',
            'data:  "finish_reason": null}]}',  # one event's data over two lines, joined by a newline
            "",
            'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "abort"}]}',
            "",
            'data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1,'
            ' "prompt_tokens_details": {"cached_tokens": 4}}}',
            "",
            "data: [DONE]",
            "",
            'data: {"never": "read"}',
            "",
        ))
    ]

    assert chunks == [
        ChunkDelta(),
        ChunkDelta(text="Hel"),
        ChunkDelta(finish_reason="abort"),
        ChunkDelta(usage=Usage(prompt_tokens=9, completion_tokens=1, cached_tokens=4)),
        StreamEnded(done=True),
    ]


async def test_tool_call_fragments_are_read_from_chunks() -> None:
    chunks = [
        chunk
        async for chunk in completion_chunks(lines(
            'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"id": "call_x", "index": 0, "type": "function",'
            ' "function": {"name": "weather", "arguments": ""}}]}, "finish_reason": null}]}',
            "",
            'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"id": null, "index": 0, "type": "function",'
            ' "function": {"name": null, "arguments": "{\\"ci"}}]}, "finish_reason": null}]}',
            "",
            'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},'
            ' "finish_reason": "tool_calls"}]}',
            "",
            "data: [DONE]",
            "",
        ))
    ]

    assert chunks == [
        ChunkDelta(tool_calls=(ToolCallFragment(index=0, call_id="call_x", name="weather"),)),
        ChunkDelta(tool_calls=(ToolCallFragment(index=0, arguments='{"ci'),)),
        ChunkDelta(tool_calls=(ToolCallFragment(index=1, arguments="{}"),), finish_reason="tool_calls"),
        StreamEnded(done=True),
    ]


def test_fragments_without_an_index_follow_their_id_or_the_latest_call() -> None:
    assembly = ToolCallAssembly()
    for fragment in (
        ToolCallFragment(index=None, call_id="a", name="weather"),
        ToolCallFragment(index=None, arguments='{"city": '),
        ToolCallFragment(index=None, call_id="b", name="clock", arguments="{}"),
        ToolCallFragment(index=None, call_id="a", arguments='"Oslo"}'),
        ToolCallFragment(index=None, name="weather"),  # to the latest call, "a": its name again, not doubled
    ):
        assembly.add(fragment)

    request = GenerationRequest(request_id="run-x", messages=(ChatMessage(role="user", content="hi"),), max_output_tokens=8)
    assert assembly.proposals(request) == (
        ToolCallProposal(call_id="a", name="weather", arguments='{"city": "Oslo"}'),
        ToolCallProposal(call_id="b", name="clock", arguments="{}"),
    )


def test_a_call_whose_arguments_never_came_has_empty_object_arguments() -> None:
    assembly = ToolCallAssembly()
    assembly.add(ToolCallFragment(index=0, call_id="c", name="clock"))

    request = GenerationRequest(request_id="run-x", messages=(ChatMessage(role="user", content="hi"),), max_output_tokens=8)
    assert assembly.proposals(request) == (ToolCallProposal(call_id="c", name="clock", arguments="{}"),)


async def test_a_body_that_ends_without_done_says_so() -> None:
    chunks = [chunk async for chunk in completion_chunks(lines('data: {"choices": []}', "", 'data: {"cut'))]
    assert chunks == [ChunkDelta(), StreamEnded(done=False)]


async def test_an_undecodable_chunk_is_unavailable() -> None:
    with pytest.raises(EngineUnavailable, match="undecodable chunk"):
        async for _ in completion_chunks(lines("data: {not json", "")):
            pass


def test_error_bodies_nested_flat_and_llama_cpp_are_typed() -> None:
    # SGLang and vLLM today: nested; older releases: flat, with object "error".
    nested = error_from_body({"error": {"message": "bad top_p", "type": "BadRequestError", "code": 400}}, status_code=400)
    flat = error_from_body({"object": "error", "message": "overloaded", "type": "X", "code": 503}, status_code=None)
    llama_cpp = error_from_body(
        {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                   "type": "exceed_context_size_error", "n_prompt_tokens": 5000, "n_ctx": 4096}},
        status_code=400,
    )
    vllm_prompt = error_from_body(
        {"object": "error", "code": 400, "message": "This model's maximum context length is 2048 tokens. However, you "
         "requested 2100 tokens (2100 in the messages, 0 in the completion). Please reduce the length."},
        status_code=400,
    )
    vague = error_from_body({"error": {"message": "context length exceeded"}}, status_code=400)

    assert isinstance(nested, EngineRejected) and nested.reason == "bad top_p"
    assert isinstance(flat, EngineUnavailable) and flat.status_code == 503
    assert isinstance(llama_cpp, PromptTooLong) and (llama_cpp.prompt_tokens, llama_cpp.context_tokens) == (5000, 4096)
    assert isinstance(vllm_prompt, PromptTooLong) and (vllm_prompt.prompt_tokens, vllm_prompt.context_tokens) == (2100, 2048)
    assert isinstance(vague, EngineRejected) and vague.status_code == 400
