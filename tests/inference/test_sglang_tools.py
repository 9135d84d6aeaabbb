"""Tool calls on the in-process SGLang engine: tools through the chat template, calls through a function-call parser.

SGLang's own parser (`sglang.srt.function_call`) cannot be imported without SGLang's GPU stack, so these
tests give the adapter a stand-in that behaves as SGLang's Hermes/Qwen2.5 detector does when streaming:
text outside `<tool_call>` blocks is normal text; each call comes back as a piece with its name, then
pieces of its arguments' JSON. The engine itself is the fake SGLang engine of `fake_sglang.py`.
"""

import json
import re
from dataclasses import dataclass

import fake_sglang
from inference.engine import ChatMessage, GenerationFinished, GenerationRequest, TokenText, ToolCallProposal, ToolSpec
from inference.sglang import SglangEngine

WEATHER = ToolSpec(
    name="weather", description="The weather in a city.",
    parameters=json.dumps({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
)
CALLS = (
    'Let me check. <tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>'
    '<tool_call>{"name": "weather", "arguments": {"city": "Bergen"}}</tool_call>'
)


@dataclass
class Piece:  # SGLang's ToolCallItem
    tool_index: int
    name: str | None
    parameters: str


class HermesParser:
    """A streaming `<tool_call>{json}</tool_call>` parser shaped like SGLang's FunctionCallParser."""

    def __init__(self, tools: list[dict]) -> None:
        self.tools = tools
        self._buffer = ""
        self._index = 0

    def parse_stream_chunk(self, chunk: str) -> tuple[str, list[Piece]]:
        self._buffer += chunk
        normal, pieces = "", []
        while True:
            start = self._buffer.find("<tool_call>")
            if start < 0:
                keep = next((n for n in range(len("<tool_call>") - 1, 0, -1) if self._buffer.endswith("<tool_call>"[:n])), 0)
                normal += self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep :]
                return normal, pieces
            normal += self._buffer[:start]
            end = self._buffer.find("</tool_call>", start)
            if end < 0:
                self._buffer = self._buffer[start:]
                return normal, pieces
            call = json.loads(self._buffer[start + len("<tool_call>") : end])
            arguments = json.dumps(call["arguments"])
            pieces += [Piece(self._index, call["name"], ""), Piece(self._index, None, arguments[:5]), Piece(self._index, None, arguments[5:])]
            self._index += 1
            self._buffer = self._buffer[end + len("</tool_call>") :]

    def parse_stream_end(self) -> tuple[str, list[Piece]]:
        held, self._buffer = self._buffer, ""
        return held, []


def tokens_of(answer: str) -> int:
    """The answer's length in the fake model's tokens: it then ends (EOS) instead of repeating itself."""
    return len(fake_sglang.FakeTokenizer().answer_token_ids(answer))


def request(*messages: ChatMessage, tools=(WEATHER,)) -> GenerationRequest:
    return GenerationRequest(request_id="run_1", messages=messages, max_output_tokens=200, tools=tools)


async def generate(fake, req: GenerationRequest, **options) -> tuple[str, GenerationFinished]:
    parsers: list[HermesParser] = []

    def factory(tools):
        parsers.append(HermesParser(tools))
        return parsers[-1]

    engine = SglangEngine(engine_factory=lambda: fake, tool_parser_factory=factory, **options)
    await engine.start()
    try:
        events = [event async for event in engine.generate(req)]
    finally:
        await engine.close()
    *pieces, finished = events
    assert all(isinstance(piece, TokenText) for piece in pieces)
    return "".join(piece.text for piece in pieces), finished


async def test_a_step_that_calls_tools_ends_with_its_calls_and_streams_only_the_text_around_them() -> None:
    fake = fake_sglang.FakeSglangEngine(answer=CALLS, answer_tokens=tokens_of(CALLS))
    text, finished = await generate(fake, request(ChatMessage(role="user", content="Weather in Oslo and Bergen?")))

    assert text.strip() == "Let me check."  # the call blocks never reach the stream
    assert finished.finish_reason == "tool_calls"
    assert [(call.name, json.loads(call.arguments)) for call in finished.tool_calls] == [
        ("weather", {"city": "Oslo"}), ("weather", {"city": "Bergen"}),
    ]
    assert len({call.call_id for call in finished.tool_calls}) == 2
    # The tools went into the model's own chat template.
    tokenizer = fake.tokenizer_manager.tokenizer
    prompt = tokenizer.decode(fake.received[0]["input_ids"], skip_special_tokens=False)
    assert '<tools>[{"type": "function", "function": {"name": "weather"' in prompt


async def test_the_next_step_carries_the_calls_and_results_in_the_template() -> None:
    fake = fake_sglang.FakeSglangEngine(answer="It is sunny in Oslo. ", answer_tokens=tokens_of("It is sunny in Oslo. "))
    asked = ChatMessage(role="assistant", content="", tool_calls=(ToolCallProposal(call_id="c1", name="weather", arguments='{"city": "Oslo"}'),))
    text, finished = await generate(fake, request(
        ChatMessage(role="user", content="Weather in Oslo?"), asked, ChatMessage(role="tool", content="sunny", tool_call_id="c1"),
    ))

    assert finished.finish_reason in ("stop", "length") and finished.tool_calls == () and "sunny" in text
    prompt = fake.tokenizer_manager.tokenizer.decode(fake.received[0]["input_ids"], skip_special_tokens=False)
    assert re.search(r'<tool_call>\{"name": "weather", "arguments": \{"city": "Oslo"\}\}</tool_call>', prompt)
    assert "<|im_start|>tool\nsunny" in prompt


async def test_without_a_parser_or_without_tools_the_engine_answers_as_before() -> None:
    fake = fake_sglang.FakeSglangEngine(answer=CALLS, answer_tokens=tokens_of(CALLS))
    engine = SglangEngine(engine_factory=lambda: fake)
    await engine.start()
    try:
        events = [event async for event in engine.generate(request(ChatMessage(role="user", content="Weather?")))]
    finally:
        await engine.close()
    assert events[-1].finish_reason == "stop" and "<tool_call>" in "".join(e.text for e in events[:-1])

    no_tools_text, finished = await generate(
        fake_sglang.FakeSglangEngine(answer="plain ", answer_tokens=tokens_of("plain ")), request(ChatMessage(role="user", content="hi"), tools=())
    )
    assert finished.finish_reason in ("stop", "length") and no_tools_text.strip().startswith("plain")


async def test_a_call_cut_by_the_length_limit_is_no_call() -> None:
    fake = fake_sglang.FakeSglangEngine(answer=CALLS, answer_tokens=400)
    req = GenerationRequest(
        request_id="run_2", messages=(ChatMessage(role="user", content="Weather?"),), max_output_tokens=6, tools=(WEATHER,),
    )
    text, finished = await generate(fake, req)
    assert finished.finish_reason == "length" and finished.tool_calls == ()
