"""The engine contract, run against every InferenceEngine adapter."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from inference.engine import (
    AbortableEngine,
    ChatMessage,
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    InferenceEngine,
    TokenText,
    ToolSpec,
)
from inference.scripted import ScriptedEngine

# The CPU model is loaded once per session, so its tests share the session's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="session")

# Long enough that no engine finishes it before the test cancels it (the CPU model runs at
# about 20 tokens/s, so 400 tokens would take ~20 s), short enough to stay inside the context.
LONG_ANSWER_TOKENS = 400
PROMPTLY_S = 2.0


@pytest_asyncio.fixture(loop_scope="session")
async def scripted_engine() -> AsyncIterator[ScriptedEngine]:
    # A small delay makes the scripted engine a stream that takes time, like a real one.
    engine = ScriptedEngine(token_delay_s=0.002, answer_tokens=LONG_ANSWER_TOKENS)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture(
    params=["scripted", "sglang", "openai_compatible", pytest.param("cpu", marks=pytest.mark.slow)]
)
def engine(request: pytest.FixtureRequest) -> InferenceEngine:
    # Looked up by name so the CPU model only loads when a cpu-parametrised test runs. "sglang" is
    # the SGLang adapter over a fake sglang.Engine; "openai_compatible" talks to a real local server.
    engine: InferenceEngine = request.getfixturevalue(f"{request.param}_engine")
    return engine


@pytest.fixture(params=["sglang", pytest.param("cpu", marks=pytest.mark.slow)])
def engine_without_tools(request: pytest.FixtureRequest) -> InferenceEngine:
    # The engines that do not offer tools to their model (docs/inference.md, "Tool calls"): the CPU
    # engine unless built with offer_tools=True.
    engine: InferenceEngine = request.getfixturevalue(f"{request.param}_engine")
    return engine


WEATHER = ToolSpec(
    name="weather",
    description="The current weather in a city.",
    parameters='{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}',
)
# A question a model with tools would call for, with the scripted engine's trigger in it.
WEATHER_QUESTION = 'What is the weather in Oslo right now? call:weather({"city": "Oslo"})'


def chat(
    *contents: str, request_id: str = "run-1", max_output_tokens: int = 12, tools: tuple[ToolSpec, ...] = ()
) -> GenerationRequest:
    roles = ("user", "assistant")
    return GenerationRequest(
        request_id=request_id,
        messages=tuple(
            ChatMessage(role=roles[i % 2], content=content) for i, content in enumerate(contents)
        ),
        max_output_tokens=max_output_tokens,
        tools=tools,
    )


STORY = "Write a long story about a dragon who learns to bake bread."


async def collect(events: AsyncIterator[GenerationEvent]) -> list[GenerationEvent]:
    return [event async for event in events]


def split(events: list[GenerationEvent]) -> tuple[list[TokenText], GenerationFinished]:
    *pieces, finished = events
    assert all(isinstance(piece, TokenText) for piece in pieces), events
    assert isinstance(finished, GenerationFinished), events
    return pieces, finished  # type: ignore[return-value]


def generation_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("turnlog-")]


async def test_engine_names_itself_and_its_concurrency(engine: InferenceEngine) -> None:
    assert isinstance(engine.name, str) and engine.name
    assert isinstance(engine.max_concurrency, int) and engine.max_concurrency >= 1


async def test_yields_text_pieces_then_exactly_one_finished_event(engine: InferenceEngine) -> None:
    pieces, finished = split(await collect(engine.generate(chat("What is the capital of France?"))))

    assert pieces, "an answer has at least one piece of text"
    assert all(piece.text for piece in pieces), "no empty pieces"
    assert finished.finish_reason in ("stop", "length")


async def test_a_request_with_tools_ends_in_text_or_in_proposed_calls(engine: InferenceEngine) -> None:
    pieces, finished = split(
        await collect(engine.generate(chat(WEATHER_QUESTION, max_output_tokens=64, tools=(WEATHER,))))
    )

    assert finished.prompt_tokens > 0 and finished.output_tokens > 0
    if finished.finish_reason == "tool_calls":
        call_ids = [call.call_id for call in finished.tool_calls]
        assert all(call_ids) and len(set(call_ids)) == len(call_ids), "ids tell the step's calls apart"
        assert all(call.name for call in finished.tool_calls)
    else:
        assert finished.finish_reason in ("stop", "length")
        assert pieces and finished.tool_calls == ()


async def test_an_engine_without_tool_support_ignores_the_tools_and_answers(
    engine_without_tools: InferenceEngine,
) -> None:
    with_tools = await collect(engine_without_tools.generate(chat(WEATHER_QUESTION, tools=(WEATHER,))))
    without = await collect(engine_without_tools.generate(chat(WEATHER_QUESTION, request_id="run-2")))

    pieces, finished = split(with_tools)
    pieces_without, finished_without = split(without)
    assert pieces and all(piece.text for piece in pieces)
    assert finished.finish_reason in ("stop", "length") and finished.tool_calls == ()
    # The tools change nothing (the second run may hit a prefix cache; its answer is the same).
    assert pieces == pieces_without
    assert (finished.prompt_tokens, finished.output_tokens) == (finished_without.prompt_tokens, finished_without.output_tokens)


async def test_usage_counts_are_positive_and_consistent(engine: InferenceEngine) -> None:
    short_pieces, short = split(await collect(engine.generate(chat("Name a colour."))))
    _, longer = split(
        await collect(
            engine.generate(chat("Name a colour.", "Blue.", "Name a fruit that has that colour."))
        )
    )

    assert short.prompt_tokens > 0
    assert short.output_tokens > 0
    # A piece is one token or a few, and some tokens (end of turn) print nothing.
    assert 1 <= len(short_pieces) <= short.output_tokens
    assert longer.prompt_tokens > short.prompt_tokens


async def test_respects_max_output_tokens(engine: InferenceEngine) -> None:
    pieces, finished = split(await collect(engine.generate(chat(STORY, max_output_tokens=3))))

    assert finished.output_tokens == 3
    assert finished.finish_reason == "length"
    assert 1 <= len(pieces) <= 3


async def test_aclose_stops_generation_promptly_and_frees_the_engine(
    engine: InferenceEngine,
) -> None:
    events = engine.generate(chat(STORY, max_output_tokens=LONG_ANSWER_TOKENS))
    first = await anext(events)
    assert isinstance(first, TokenText)

    started = time.monotonic()
    await events.aclose()  # type: ignore[attr-defined]

    assert time.monotonic() - started < PROMPTLY_S
    assert generation_threads() == []
    _, finished = split(await collect(engine.generate(chat("Say hello.", request_id="run-2"))))
    assert finished.output_tokens > 0


async def test_cancelling_the_consuming_task_stops_generation_and_frees_the_engine(
    engine: InferenceEngine,
) -> None:
    first_piece_seen = asyncio.Event()
    received: list[GenerationEvent] = []

    async def consume() -> None:
        async for event in engine.generate(chat(STORY, max_output_tokens=LONG_ANSWER_TOKENS)):
            received.append(event)
            first_piece_seen.set()

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(first_piece_seen.wait(), timeout=30)
    started = time.monotonic()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer

    assert time.monotonic() - started < PROMPTLY_S
    assert generation_threads() == []
    assert not any(isinstance(event, GenerationFinished) for event in received)
    _, finished = split(await collect(engine.generate(chat("Say hello.", request_id="run-2"))))
    assert finished.output_tokens > 0


async def test_closing_before_the_first_event_is_harmless(engine: InferenceEngine) -> None:
    unstarted = engine.generate(chat(STORY))
    await unstarted.aclose()  # type: ignore[attr-defined]

    _, finished = split(await collect(engine.generate(chat("Say hello."))))
    assert finished.output_tokens > 0


async def test_abort_by_request_id_ends_the_stream_with_cancelled(engine: InferenceEngine) -> None:
    assert isinstance(engine, AbortableEngine)
    assert engine.abort("no-such-run") is False

    events: list[GenerationEvent] = []
    stream = engine.generate(
        chat(STORY, request_id="run-abort", max_output_tokens=LONG_ANSWER_TOKENS)
    )
    try:
        async for event in stream:
            events.append(event)
            if len(events) == 1:
                assert engine.abort("run-abort") is True
    finally:
        await stream.aclose()  # type: ignore[attr-defined]

    pieces, finished = split(events)
    assert finished.finish_reason == "cancelled"
    assert len(pieces) <= finished.output_tokens < LONG_ANSWER_TOKENS
    assert engine.abort("run-abort") is False, "a finished run is no longer abortable"

