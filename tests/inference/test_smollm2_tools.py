"""SmolLM2's function-calling format: the prompt that offers tools, and `<tool_call>` blocks taken out of a stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from inference.cpu import proposing_calls
from inference.engine import (
    ChatMessage,
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    TokenText,
    ToolCallProposal,
    ToolSpec,
)
from inference.smollm2_tools import ToolCallBlocks, parse_tool_call_block, template_messages, tools_system_prompt

WEATHER = ToolSpec(
    name="weather",
    description="The weather in a city.",
    parameters='{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}',
)


def numbered(index: int) -> str:
    return f"id-{index}"


def stream(blocks: ToolCallBlocks, *pieces: str) -> str:
    return "".join(blocks.push(piece) for piece in pieces) + blocks.finish()


def test_text_streams_on_and_a_block_split_anywhere_becomes_calls() -> None:
    blocks = ToolCallBlocks(numbered)
    shown = [
        blocks.push(piece)
        for piece in ("Let me check. <", "tool", "_call>[{\"name\": \"weather\", ", '"arguments": {"city": "Oslo"}}',
                      ', {"name": "clock", "arguments": {}}]</tool', "_call>", " Done.")
    ]

    assert shown == ["Let me check. ", "", "", "", "", "", " Done."]
    assert blocks.finish() == ""
    assert blocks.calls == [
        ToolCallProposal(call_id="id-0", name="weather", arguments='{"city": "Oslo"}'),
        ToolCallProposal(call_id="id-1", name="clock", arguments="{}"),
    ]


def test_a_less_than_sign_that_starts_no_tag_is_shown_once_it_is_clear() -> None:
    blocks = ToolCallBlocks(numbered)

    assert blocks.push("1 <") == "1 "
    assert blocks.push(" 2 and <to") == "< 2 and "
    assert blocks.push("ol>") == "<tool>"
    assert blocks.calls == []


def test_an_empty_list_of_calls_shows_nothing_and_proposes_nothing() -> None:
    blocks = ToolCallBlocks(numbered)

    assert stream(blocks, "<tool_call>[]</tool_call>") == ""
    assert blocks.calls == []


def test_a_block_that_is_not_calls_goes_on_as_the_text_the_model_wrote() -> None:
    blocks = ToolCallBlocks(numbered)

    assert stream(blocks, "<tool_call>weather in Oslo</tool_call> ok") == "<tool_call>weather in Oslo</tool_call> ok"
    assert blocks.calls == []


def test_an_unclosed_block_comes_back_as_text_at_the_end() -> None:
    blocks = ToolCallBlocks(numbered)

    assert blocks.push('Sure <tool_call>[{"name": "wea') == "Sure "
    assert blocks.finish() == '<tool_call>[{"name": "wea'
    assert blocks.calls == []


def test_blocks_hold_a_list_or_one_call_and_keep_string_arguments_as_written() -> None:
    assert parse_tool_call_block('{"name": "weather", "arguments": {"city": "Oslo"}}') == [("weather", '{"city": "Oslo"}')]
    assert parse_tool_call_block('[{"name": "weather", "arguments": "{city: Oslo"}]') == [("weather", "{city: Oslo")]
    assert parse_tool_call_block('[{"name": "clock"}]') == [("clock", "{}")]
    assert parse_tool_call_block('[{"arguments": {}}]') is None
    assert parse_tool_call_block("[1, 2") is None


def test_without_tools_or_calls_the_messages_go_to_the_template_as_before() -> None:
    messages = (ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="hi"))

    assert template_messages(messages, ()) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


def test_tools_lead_the_system_message_and_calls_and_results_are_written_back() -> None:
    messages = (
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Weather in Oslo?"),
        ChatMessage(role="assistant", content="", tool_calls=(
            ToolCallProposal(call_id="call_1", name="weather", arguments='{"city": "Oslo"}'),
        )),
        ChatMessage(role="tool", content='{"sky": "clear"}', tool_call_id="call_1"),
    )

    rendered = template_messages(messages, (WEATHER,))

    assert [message["role"] for message in rendered] == ["system", "user", "assistant", "tool"]
    assert rendered[0]["content"] == f"{tools_system_prompt((WEATHER,))}\n\nBe brief."
    assert rendered[2]["content"] == '<tool_call>[{"name": "weather", "arguments": {"city": "Oslo"}}]</tool_call>'
    assert rendered[3]["content"] == '{"sky": "clear"}'


def test_the_tools_prompt_lists_each_tool_with_its_parsed_schema() -> None:
    prompt = tools_system_prompt((WEATHER,))
    listed = json.loads(prompt.split("<tools>")[1].split("</tools>")[0])

    assert listed == [{"type": "function", "function": {
        "name": "weather", "description": "The weather in a city.", "parameters": json.loads(WEATHER.parameters),
    }}]
    assert prompt.rstrip().endswith("]</tool_call>")


def test_a_conversation_without_a_system_message_gets_the_tools_prompt_alone() -> None:
    rendered = template_messages((ChatMessage(role="user", content="hi"),), (WEATHER,))

    assert rendered == [{"role": "system", "content": tools_system_prompt((WEATHER,))}, {"role": "user", "content": "hi"}]


# --- the CPU engine's stream with its calls taken out -------------------------------------------

REQUEST = GenerationRequest(
    request_id="run-1", messages=(ChatMessage(role="user", content="Weather in Oslo?"),), max_output_tokens=64,
    tools=(WEATHER,),
)


async def model_stream(*pieces: str, finish_reason: str) -> AsyncIterator[GenerationEvent]:
    for piece in pieces:
        yield TokenText(text=piece)
    yield GenerationFinished(prompt_tokens=10, output_tokens=len(pieces), finish_reason=finish_reason)  # type: ignore[arg-type]


async def events_of(events: AsyncIterator[GenerationEvent]) -> list[GenerationEvent]:
    return [event async for event in events]


async def test_a_step_that_stops_after_its_block_proposes_the_calls() -> None:
    events = await events_of(proposing_calls(model_stream(
        "<tool_call>[", '{"name": "weather", "arguments": {"city": "Oslo"}}', "]</tool_call>", finish_reason="stop",
    ), REQUEST))

    assert len(events) == 1
    finished = events[0]
    assert isinstance(finished, GenerationFinished) and finished.finish_reason == "tool_calls"
    assert [(call.name, call.arguments) for call in finished.tool_calls] == [("weather", '{"city": "Oslo"}')]
    assert finished.tool_calls[0].call_id.startswith("call_")
    assert finished.output_tokens == 3


@pytest.mark.parametrize("finish_reason", ["length", "cancelled"])
async def test_a_step_cut_short_proposes_nothing(finish_reason: str) -> None:
    events = await events_of(proposing_calls(model_stream(
        'Ok <tool_call>[{"name": "weather", "arguments": {}}]</tool_call> and <tool_call>[{"na', finish_reason=finish_reason,
    ), REQUEST))

    assert events == [
        TokenText(text="Ok  and "),  # the complete block left out, then the unfinished one as it was
        TokenText(text='<tool_call>[{"na'),
        GenerationFinished(prompt_tokens=10, output_tokens=1, finish_reason=finish_reason),  # type: ignore[arg-type]
    ]


async def test_an_answer_without_blocks_streams_as_it_came() -> None:
    events = await events_of(proposing_calls(model_stream("It is ", "sunny.", finish_reason="stop"), REQUEST))

    assert events == [
        TokenText(text="It is "),
        TokenText(text="sunny."),
        GenerationFinished(prompt_tokens=10, output_tokens=2, finish_reason="stop"),
    ]
