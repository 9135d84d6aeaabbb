"""The scripted engine: deterministic answers derived from the prompt, cheap, and well behaved."""

from __future__ import annotations

import asyncio

from inference.engine import ChatMessage, GenerationFinished, GenerationRequest, TokenText
from inference.scripted import ScriptedEngine, scripted_answer


def request(*messages: ChatMessage, max_output_tokens: int = 100) -> GenerationRequest:
    return GenerationRequest(
        request_id="run-1", messages=messages, max_output_tokens=max_output_tokens
    )


def user(content: str) -> ChatMessage:
    return ChatMessage(role="user", content=content)


async def answer_of(
    engine: ScriptedEngine, generation: GenerationRequest
) -> tuple[str, GenerationFinished]:
    pieces: list[str] = []
    finished: GenerationFinished | None = None
    async for event in engine.generate(generation):
        if isinstance(event, TokenText):
            pieces.append(event.text)
        else:
            finished = event
    assert finished is not None
    return "".join(pieces), finished


async def test_same_prompt_same_answer_and_different_prompt_different_answer() -> None:
    engine = ScriptedEngine(answer_tokens=6)
    history = (user("hi"), ChatMessage(role="assistant", content="hello"))

    first, _ = await answer_of(engine, request(*history, user("tell me about tides")))
    again, _ = await answer_of(engine, request(*history, user("tell me about tides")))
    other_question, _ = await answer_of(engine, request(*history, user("tell me about stars")))
    other_history, _ = await answer_of(engine, request(user("tell me about tides")))

    assert first == again
    assert len({first, other_question, other_history}) == 3


async def test_answer_cycles_the_last_user_words_one_token_each() -> None:
    tokens = scripted_answer((user("ignored"), user("red green")), answer_tokens=6)

    assert len(tokens) == 6
    assert all(token.startswith(" ") for token in tokens)
    assert tokens[1:] == (" red", " green", " red", " green", " red")


async def test_usage_counts_words_of_every_message() -> None:
    engine = ScriptedEngine(answer_tokens=5)
    generation = request(
        ChatMessage(role="system", content="be brief"),
        user("one two three"),
        max_output_tokens=100,
    )

    _, finished = await answer_of(engine, generation)

    assert finished == GenerationFinished(prompt_tokens=5, output_tokens=5, finish_reason="stop")


async def test_a_prompt_without_user_text_still_gets_an_answer() -> None:
    engine = ScriptedEngine(answer_tokens=4)

    text, finished = await answer_of(engine, request(ChatMessage(role="system", content="   ")))

    assert text.strip()
    assert finished.output_tokens == 4


async def test_token_delay_paces_the_stream() -> None:
    engine = ScriptedEngine(token_delay_s=0.02, answer_tokens=10)
    loop = asyncio.get_running_loop()
    started = loop.time()

    await answer_of(engine, request(user("pace me")))

    assert loop.time() - started >= 10 * 0.02 * 0.9  # the loop may wake a hair early


async def test_zero_delay_still_lets_other_tasks_run_between_tokens() -> None:
    engine = ScriptedEngine(token_delay_s=0.0, answer_tokens=50)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    try:
        await answer_of(engine, request(user("do not starve the loop")))
    finally:
        ticking.cancel()

    assert ticks >= 25


async def test_many_concurrent_generations_are_independent() -> None:
    engine = ScriptedEngine(token_delay_s=0.001, answer_tokens=8)
    prompts = [f"question number {index}" for index in range(200)]

    answers = await asyncio.gather(
        *(answer_of(engine, request(user(prompt))) for prompt in prompts)
    )

    assert engine.max_concurrency >= 200
    assert len({text for text, _ in answers}) == 200
    assert all(finished.output_tokens == 8 for _, finished in answers)
