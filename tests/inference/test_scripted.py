"""The scripted engine: deterministic answers derived from the prompt, cheap, and well behaved."""

from __future__ import annotations

import asyncio

from inference.engine import ChatMessage, GenerationFinished, GenerationRequest, TokenText, ToolCallProposal, ToolSpec
from inference.scripted import ScriptedEngine, call_groups, proposed_calls, scripted_answer, tool_results_answer


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


# --- tool calls: the `call:name(arguments)` trigger ---------------------------------------------

WEATHER = ToolSpec(name="weather", description="The weather in a city.", parameters='{"type": "object"}')


def offering(*messages: ChatMessage, tools: tuple[ToolSpec, ...] = (WEATHER,), max_output_tokens: int = 100) -> GenerationRequest:
    return GenerationRequest(request_id="run-1", messages=messages, max_output_tokens=max_output_tokens, tools=tools)


async def test_the_trigger_proposes_each_call_in_order_without_text() -> None:
    engine = ScriptedEngine()

    text, finished = await answer_of(engine, offering(
        user('Pack for call:weather({"city": "Oslo"}) and call:weather({"city": "Bergen (west)"}).'),
    ))

    assert text == ""
    assert finished.finish_reason == "tool_calls"
    assert finished.tool_calls == (
        ToolCallProposal(call_id="call_1", name="weather", arguments='{"city": "Oslo"}'),
        ToolCallProposal(call_id="call_2", name="weather", arguments='{"city": "Bergen (west)"}'),
    )
    assert finished.prompt_tokens == 8
    assert finished.output_tokens == 5  # the words of `weather({"city": "Oslo"})` and of the second call


async def test_invalid_arguments_and_tools_not_on_offer_are_proposed_as_written() -> None:
    _, finished = await answer_of(ScriptedEngine(), offering(user('call:teleport({"to": ) and call:weather(Oslo please)')))

    assert [(call.name, call.arguments) for call in finished.tool_calls] == [
        ("teleport", '{"to": '),
        ("weather", "Oslo please"),
    ]


async def test_without_tools_on_offer_the_trigger_is_echoed() -> None:
    text, finished = await answer_of(ScriptedEngine(answer_tokens=4), request(user("call:weather({})")))

    assert "call:weather({})" in text
    assert (finished.finish_reason, finished.tool_calls) == ("stop", ())


async def test_tools_on_offer_without_a_trigger_get_an_ordinary_answer() -> None:
    plain = await answer_of(ScriptedEngine(answer_tokens=4), request(user("hello there")))
    offered = await answer_of(ScriptedEngine(answer_tokens=4), offering(user("hello there")))

    assert offered == plain


async def test_once_results_are_in_it_reports_them_instead_of_calling_again() -> None:
    question = user('call:weather({"city": "Oslo"}) call:clock({})')
    calls = (
        ToolCallProposal(call_id="call_1", name="weather", arguments='{"city": "Oslo"}'),
        ToolCallProposal(call_id="call_2", name="clock", arguments="{}"),
    )

    text, finished = await answer_of(ScriptedEngine(), offering(
        question,
        ChatMessage(role="assistant", content="", tool_calls=calls),
        ChatMessage(role="tool", content='{"sky": "clear"}', tool_call_id="call_1"),
        ChatMessage(role="tool", content="unknown tool: clock", tool_call_id="call_2"),
    ))

    assert text.strip() == 'weather returned {"sky": "clear"}. clock returned unknown tool: clock.'
    assert (finished.finish_reason, finished.tool_calls) == ("stop", ())
    assert tool_results_answer((question,)) is None


async def test_results_of_an_earlier_turn_do_not_stop_a_new_turn_from_calling() -> None:
    earlier = (
        user("call:weather({})"),
        ChatMessage(role="assistant", content="", tool_calls=(ToolCallProposal(call_id="call_1", name="weather", arguments="{}"),)),
        ChatMessage(role="tool", content="sunny", tool_call_id="call_1"),
        ChatMessage(role="assistant", content="weather returned sunny."),
    )

    calls = proposed_calls((*earlier, user("call:weather({}) again")), (WEATHER,))

    assert [call.call_id for call in calls] == ["call_1"]


async def test_calls_that_do_not_fit_the_output_room_are_cut_short_and_proposed_nothing() -> None:
    _, finished = await answer_of(ScriptedEngine(), offering(user('call:weather({"city": "Oslo"})'), max_output_tokens=1))

    assert (finished.finish_reason, finished.tool_calls, finished.output_tokens) == ("length", (), 1)


async def test_an_aborted_proposal_is_cancelled_without_calls() -> None:
    engine = ScriptedEngine(token_delay_s=0.05)
    stream = engine.generate(offering(user("call:weather({})")))
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.01)

    assert engine.abort("run-1") is True
    finished = await pending
    await stream.aclose()

    assert finished == GenerationFinished(prompt_tokens=1, output_tokens=0, finish_reason="cancelled")


async def test_a_short_answer_that_fits_stops_rather_than_reporting_length() -> None:
    # The whole report is four words: room for ten is not a cut, even below the engine's answer length.
    text, finished = await answer_of(ScriptedEngine(answer_tokens=20), offering(
        user("call:weather({})"),
        ChatMessage(role="assistant", content="", tool_calls=(ToolCallProposal(call_id="call_1", name="weather", arguments="{}"),)),
        ChatMessage(role="tool", content="it is sunny", tool_call_id="call_1"),
        max_output_tokens=10,
    ))

    assert finished.finish_reason == "stop" and finished.output_tokens == 5


# --- sequential calls: `then` between triggers, one group per model step ---------------------------


def step_after(*calls: ToolCallProposal) -> tuple[ChatMessage, ...]:
    """What the tool loop appends after a step: the model's calls, then each one's result."""
    return (
        ChatMessage(role="assistant", content="", tool_calls=calls),
        *(ChatMessage(role="tool", content=f"ok {call.call_id}", tool_call_id=call.call_id) for call in calls),
    )


def test_then_splits_the_triggers_into_groups_and_the_rest_stay_together() -> None:
    groups = call_groups('call:a({}) then call:b({"n": 1}) call:c({}), Then call:d({}) and call:e({})')

    assert [[(call.call_id, call.name) for call in group] for group in groups] == [
        [("call_1", "a")],
        [("call_2", "b"), ("call_3", "c")],
        [("call_4", "d"), ("call_5", "e")],
    ]
    # `then` inside the arguments, or in a longer word, splits nothing.
    assert len(call_groups('call:a({"when": "then"}) call:b({}) thenceforth call:c({})')) == 1
    assert call_groups("no trigger, then nothing") == ()


async def test_each_step_proposes_the_next_group_and_answers_once_every_group_is_in() -> None:
    engine = ScriptedEngine()
    question = user('call:weather({"city": "Oslo"}) then call:weather({"city": "Bergen"}) then call:clock({})')
    messages: tuple[ChatMessage, ...] = (question,)
    proposed: list[tuple[ToolCallProposal, ...]] = []
    for _ in range(3):
        text, finished = await answer_of(engine, offering(*messages))
        assert (text, finished.finish_reason) == ("", "tool_calls")
        proposed.append(finished.tool_calls)
        messages = (*messages, *step_after(*finished.tool_calls))

    text, finished = await answer_of(engine, offering(*messages))

    assert [[(call.call_id, call.name, call.arguments) for call in step] for step in proposed] == [
        [("call_1", "weather", '{"city": "Oslo"}')],
        [("call_2", "weather", '{"city": "Bergen"}')],
        [("call_3", "clock", "{}")],
    ]
    assert finished.finish_reason == "stop"
    assert text.strip() == "weather returned ok call_1. weather returned ok call_2. clock returned ok call_3."


def test_call_ids_are_unique_across_the_steps_of_a_run() -> None:
    question = user(" then ".join(f'call:weather({{"n": {n}}})' for n in range(8)))
    messages: tuple[ChatMessage, ...] = (question,)
    ids: list[str] = []
    while calls := proposed_calls(messages, (WEATHER,)):
        ids.extend(call.call_id for call in calls)
        messages = (*messages, *step_after(*calls))

    assert ids == [f"call_{n}" for n in range(1, 9)]


async def test_a_step_without_tools_answers_with_the_results_so_far_even_with_groups_left() -> None:
    # The loop's last step when a budget ran out offers no tools: the model must answer.
    question = user("call:weather({}) then call:weather({})")
    first = proposed_calls((question,), (WEATHER,))

    text, finished = await answer_of(ScriptedEngine(), offering(question, *step_after(*first), tools=()))

    assert (finished.finish_reason, text.strip()) == ("stop", "weather returned ok call_1.")
