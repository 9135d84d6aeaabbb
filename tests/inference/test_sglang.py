"""The SGLang adapter's own parts: cumulative text to deltas, the chat template, aborts reaching the
scheduler, usage, and SGLang's errors; over the fake sglang.Engine (the conformance suite runs too)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import types
from http import HTTPStatus
from pathlib import Path

import fake_sglang
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.engine import (
    ChatMessage,
    EngineRejected,
    EngineUnavailable,
    GenerationFinished,
    GenerationRequest,
    PromptTooLong,
    TokenText,
)
from inference.sglang import SglangEngine, TextDeltas

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
STORY = "Write a long story about a dragon who learns to bake bread."


def chat(*contents: str, request_id: str = "run-1", max_output_tokens: int = 30) -> GenerationRequest:
    roles = ("user", "assistant")
    return GenerationRequest(
        request_id=request_id,
        messages=tuple(ChatMessage(role=roles[i % 2], content=text) for i, text in enumerate(contents)),
        max_output_tokens=max_output_tokens,
    )


async def run(engine: SglangEngine, request: GenerationRequest) -> tuple[str, GenerationFinished]:
    events = [event async for event in engine.generate(request)]
    *pieces, finished = events
    assert all(isinstance(piece, TokenText) and piece.text for piece in pieces), events
    assert isinstance(finished, GenerationFinished), events
    return "".join(piece.text for piece in pieces), finished


async def started(fake: fake_sglang.FakeSglangEngine, **adapter_options) -> SglangEngine:
    engine = SglangEngine(engine_factory=lambda: fake, **adapter_options)
    await engine.start()
    return engine


async def until(condition, timeout_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


# --- TextDeltas: the cumulative text SGLang streams, turned into new text only -----------------


def test_cumulative_texts_become_their_new_suffixes() -> None:
    deltas = TextDeltas()
    assert [deltas.take(text) for text in ("Hel", "Hello", "Hello wor", "Hello world")] == ["Hel", "lo", " wor", "ld"]
    assert deltas.text == "Hello world"


def test_the_same_text_twice_adds_nothing() -> None:
    deltas = TextDeltas()
    assert [deltas.take("Hi"), deltas.take("Hi"), deltas.take(None), deltas.take("Hi", final=True)] == ["Hi", "", "", ""]


def test_an_unfinished_character_is_held_back_until_its_bytes_arrive() -> None:
    deltas = TextDeltas()
    # A decoder prints U+FFFD for a multi-byte character whose last bytes are still to come.
    assert deltas.take("caf\ufffd") == "caf"
    assert deltas.take("caf\ufffd\ufffd") == ""
    assert deltas.take("café") == "é"


def test_a_replacement_character_still_there_at_the_end_is_real_output() -> None:
    deltas = TextDeltas()
    assert deltas.take("bad \ufffd") == "bad "
    assert deltas.take("bad \ufffd", final=True) == "\ufffd"


def test_revised_text_is_never_handed_out_twice() -> None:
    deltas = TextDeltas()
    assert deltas.take("Hello STO") == "Hello STO"
    assert deltas.take("Hello ", final=True) == ""  # a stop string trimmed at the end: too late to take back
    assert deltas.revisions == 1
    other = TextDeltas()
    assert other.take("abX") == "abX"
    assert other.take("abcd") == "d"  # taken from the same offset, as SGLang's own server does
    assert other.take("abcde") == "e"  # one revision, counted once
    assert (other.revisions, other.text) == (1, "abXde")


def test_incremental_streams_pass_their_pieces_through() -> None:
    deltas = TextDeltas(incremental=True)
    assert [deltas.take("Hel"), deltas.take("lo"), deltas.take(None), deltas.take(" you", final=True)] == [
        "Hel", "lo", "", " you",
    ]


@given(
    text=st.text(alphabet=st.sampled_from("ab é🍞\ufffd"), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=12),
)
def test_deltas_of_any_growing_text_add_up_to_it_exactly(text: str, cuts: list[int]) -> None:
    deltas = TextDeltas()
    handed_out = "".join(deltas.take(text[:cut]) for cut in sorted(cuts)) + deltas.take(text, final=True)
    assert handed_out == text
    assert deltas.revisions == 0


# --- the adapter over the fake engine -----------------------------------------------------------


async def test_the_models_chat_template_is_applied_with_one_bos(fake_sglang_engine) -> None:
    engine = await started(fake_sglang_engine, sampling_params={"temperature": 0.0})
    try:
        await run(engine, chat("Name a colour.", request_id="run-template"))
    finally:
        await engine.close()

    received = fake_sglang_engine.received[0]
    tokenizer = fake_sglang_engine.tokenizer_manager.tokenizer
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a colour."}], tokenize=False, add_generation_prompt=True
    )
    assert received["input_ids"] == tokenizer.encode(rendered, add_special_tokens=False)
    assert received["input_ids"].count(fake_sglang.BOS_TOKEN_ID) == 1
    assert received["rid"] == "run-template"
    assert received["sampling_params"] == {"temperature": 0.0, "max_new_tokens": 30}


async def test_streamed_text_is_sglangs_text_exactly_with_no_broken_characters(fake_sglang_engine) -> None:
    engine = await started(fake_sglang_engine)
    try:
        pieces = [event async for event in engine.generate(chat(STORY, max_output_tokens=40))]
    finally:
        await engine.close()

    texts = [piece.text for piece in pieces if isinstance(piece, TokenText)]
    assert "".join(texts).startswith("Fresh bread, warm crust: café au lait and 🍞 for the dragon")
    assert not any("\ufffd" in text for text in texts)
    # The emoji's four bytes are four tokens; the detokenizer sends it whole.
    assert any("🍞" in text for text in texts)


async def test_an_engine_that_streams_increments_is_read_as_such() -> None:
    cumulative, incremental = fake_sglang.FakeSglangEngine(), fake_sglang.FakeSglangEngine(incremental_streaming_output=True)
    texts = []
    for fake in (cumulative, incremental):
        engine = await started(fake)
        try:
            texts.append(await run(engine, chat(STORY, max_output_tokens=40)))
        finally:
            await engine.close()

    (cumulative_text, cumulative_finished), (incremental_text, incremental_finished) = texts
    assert incremental_text == cumulative_text
    assert incremental_finished == cumulative_finished
    assert cumulative_text.count("Fresh bread") == 2  # the 40 tokens go round the answer twice, no more


async def test_usage_counts_the_prefix_cache_hits_of_a_follow_up_turn(fake_sglang_engine) -> None:
    engine = await started(fake_sglang_engine)
    try:
        first_text, first = await run(engine, chat("Name a colour.", request_id="run-a"))
        _, second = await run(engine, chat("Name a colour.", first_text, "And a fruit?", request_id="run-b"))
    finally:
        await engine.close()

    assert first.cached_tokens == 0
    assert 0 < second.cached_tokens < second.prompt_tokens
    assert second.cached_tokens >= first.prompt_tokens - 3  # all but the generation prompt is shared


async def test_an_answer_that_would_overflow_the_context_gets_the_room_left() -> None:
    fake = fake_sglang.FakeSglangEngine(context_len=40)
    engine = await started(fake)
    try:
        _, finished = await run(engine, chat("Name a colour.", max_output_tokens=100))
    finally:
        await engine.close()

    room = 40 - finished.prompt_tokens
    assert fake.received[0]["sampling_params"]["max_new_tokens"] == room
    assert (finished.finish_reason, finished.output_tokens) == ("length", room)


async def test_a_prompt_that_does_not_fit_is_refused_before_it_reaches_sglang() -> None:
    fake = fake_sglang.FakeSglangEngine(context_len=10)
    engine = await started(fake)
    try:
        with pytest.raises(PromptTooLong) as refused:
            await run(engine, chat(STORY))
    finally:
        await engine.close()

    assert refused.value.context_tokens == 10 and refused.value.prompt_tokens > 10
    assert fake.received == []


async def test_sglangs_own_refusals_become_typed_errors() -> None:
    # A tokenizer manager that does not say its context length (SGLang's multi-tokenizer router).
    fake = fake_sglang.FakeSglangEngine(context_len=40, expose_context_len=False)
    engine = await started(fake)
    try:
        with pytest.raises(PromptTooLong) as too_long:
            await run(engine, chat(" ".join([STORY] * 5)))
        with pytest.raises(EngineRejected, match="maximum context length of 40 tokens"):
            await run(engine, chat("Name a colour.", max_output_tokens=100))
    finally:
        await engine.close()

    assert too_long.value.context_tokens == 40 and too_long.value.prompt_tokens >= 40


async def test_a_request_id_sglang_already_holds_is_rejected(fake_sglang_engine) -> None:
    engine = await started(fake_sglang_engine)
    elsewhere = await fake_sglang_engine.async_generate(input_ids=[5, 6, 7], stream=True, rid="run-taken")
    try:
        await anext(elsewhere)
        with pytest.raises(EngineRejected, match="Duplicate request ID"):
            await run(engine, chat("Say hello.", request_id="run-taken"))
    finally:
        fake_sglang_engine.tokenizer_manager.abort_request("run-taken")
        await elsewhere.aclose()
        await engine.close()


async def test_closing_sglangs_stream_alone_would_leave_the_gpu_generating(fake_sglang_engine) -> None:
    """Why the adapter aborts: SGLang forgets a closed stream's request but keeps generating it."""
    fake_sglang_engine.tokenizer_manager.auto_create_handle_loop()
    stream = await fake_sglang_engine.async_generate(input_ids=[5, 6, 7], stream=True, rid="run-orphan")
    await anext(stream)
    await stream.aclose()
    scheduler = fake_sglang_engine.scheduler
    generated = scheduler.generated_tokens["run-orphan"]

    await until(lambda: scheduler.generated_tokens["run-orphan"] > generated + 5)
    assert "run-orphan" not in fake_sglang_engine.tokenizer_manager.rid_to_state
    fake_sglang_engine.shutdown()


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_leaving_a_stream_aborts_the_request_on_the_scheduler(fake_sglang_engine, how: str) -> None:
    engine = await started(fake_sglang_engine)
    scheduler = fake_sglang_engine.scheduler
    first_piece = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(chat(STORY, request_id="run-left", max_output_tokens=400)):
            first_piece.set()
            if how == "aclose":
                return  # leaving the loop closes the stream

    consumer = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first_piece.wait(), timeout=5)
        if how == "cancel":
            consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await until(lambda: "run-left" in scheduler.finished_reasons)
        stopped_at = scheduler.generated_tokens["run-left"]
        await asyncio.sleep(0.03)  # ~15 scheduler steps
    finally:
        await engine.close()

    assert fake_sglang_engine.tokenizer_manager.abort_requests == ["run-left"]
    assert scheduler.finished_reasons["run-left"]["type"] == "abort"
    assert scheduler.generated_tokens["run-left"] == stopped_at < 400
    assert engine.abort("run-left") is False


async def test_aborting_a_request_still_waiting_for_the_gpu() -> None:
    fake = fake_sglang.FakeSglangEngine(max_running_requests=1)
    engine = await started(fake)
    running = engine.generate(chat(STORY, request_id="run-running", max_output_tokens=400))
    waiting = engine.generate(chat("Say hello.", request_id="run-waiting"))
    try:
        await anext(running)
        waiting_next = asyncio.ensure_future(anext(waiting))
        await until(lambda: [req.rid for req in fake.scheduler.waiting] == ["run-waiting"])
        assert engine.abort("run-waiting") is True
        finished = await asyncio.wait_for(waiting_next, timeout=2)
    finally:
        await waiting.aclose()
        await running.aclose()
        await engine.close()

    # SGLang answers it from the waiting queue, without prompt_tokens: the adapter's own count stands in.
    assert isinstance(finished, GenerationFinished)
    assert finished.finish_reason == "cancelled" and finished.output_tokens == 0
    assert finished.prompt_tokens == len(fake.received[1]["input_ids"])
    assert "run-waiting" not in fake.scheduler.generated_tokens


async def test_an_abort_before_the_request_reaches_sglang_ends_it_at_once(fake_sglang_engine) -> None:
    engine = await started(fake_sglang_engine)
    stream = engine.generate(chat("Say hello.", request_id="run-early"))
    try:
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)  # the generation starts, and waits for its prompt to be tokenized
        assert engine.abort("run-early") is True
        finished = await asyncio.wait_for(first, timeout=2)
    finally:
        await stream.aclose()
        await engine.close()

    assert isinstance(finished, GenerationFinished) and finished.finish_reason == "cancelled"
    assert finished.output_tokens == 0 and finished.prompt_tokens > 0
    assert fake_sglang_engine.received == []


@pytest.mark.parametrize(
    ("status_code", "error"), [(HTTPStatus.SERVICE_UNAVAILABLE, EngineUnavailable), (HTTPStatus.BAD_REQUEST, EngineRejected)]
)
async def test_an_abort_the_scheduler_makes_with_an_error_status_raises(fake_sglang_engine, status_code, error) -> None:
    engine = await started(fake_sglang_engine)
    stream = engine.generate(chat(STORY, request_id="run-failing", max_output_tokens=400))
    try:
        await anext(stream)
        fake_sglang_engine.scheduler.fail("run-failing", message="KV cache pool is full", status_code=status_code)
        with pytest.raises(error, match="KV cache pool is full") as raised:
            async for _ in stream:
                pass
    finally:
        await stream.aclose()
        await engine.close()

    assert raised.value.status_code == status_code


async def test_an_abort_of_everything_on_the_server_ends_the_run_as_cancelled(fake_sglang_engine) -> None:
    engine = await started(fake_sglang_engine)
    stream = engine.generate(chat(STORY, request_id="run-bystander", max_output_tokens=400))
    try:
        await anext(stream)
        fake_sglang_engine.tokenizer_manager.abort_request(abort_all=True)  # e.g. before a weight update
        events = [event async for event in stream]
    finally:
        await stream.aclose()
        await engine.close()

    assert isinstance(events[-1], GenerationFinished) and events[-1].finish_reason == "cancelled"


async def test_closing_the_engine_aborts_what_runs_and_shuts_sglang_down(fake_sglang_engine) -> None:
    engine = await started(fake_sglang_engine)
    stream = engine.generate(chat(STORY, request_id="run-at-close", max_output_tokens=400))
    try:
        await anext(stream)
        await engine.close()
    finally:
        await stream.aclose()

    assert fake_sglang_engine.is_shut_down
    assert fake_sglang_engine.tokenizer_manager.abort_requests[0] == "run-at-close"
    assert engine.abort("run-at-close") is False


async def test_the_same_request_id_twice_at_once_is_rejected(fake_sglang_engine) -> None:
    engine = await started(fake_sglang_engine)
    first = engine.generate(chat(STORY, request_id="run-twice", max_output_tokens=400))
    try:
        await anext(first)
        with pytest.raises(EngineRejected, match="already generating"):
            await run(engine, chat("Say hello.", request_id="run-twice"))
    finally:
        await first.aclose()
        await engine.close()


async def test_generate_before_start_is_an_error() -> None:
    engine = SglangEngine(engine_factory=fake_sglang.FakeSglangEngine)
    with pytest.raises(RuntimeError, match="before start"):
        await anext(engine.generate(chat("Say hello.")))


def test_model_path_or_factory_but_not_both() -> None:
    with pytest.raises(ValueError, match="either model_path or engine_factory"):
        SglangEngine()
    with pytest.raises(ValueError, match="either model_path or engine_factory"):
        SglangEngine(model_path="Qwen/Qwen2.5-0.5B-Instruct", engine_factory=fake_sglang.FakeSglangEngine)


def test_importing_the_adapter_imports_no_sglang() -> None:
    probe = (
        "import sys, inference.sglang as adapter; "
        "adapter.SglangEngine(model_path='Qwen/Qwen2.5-0.5B-Instruct'); "
        "assert 'sglang' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=REPOSITORY_ROOT, check=True)


async def test_start_builds_sglang_engine_from_the_model_path_and_arguments(monkeypatch) -> None:
    built: list[dict] = []

    def build(**arguments) -> fake_sglang.FakeSglangEngine:
        built.append(arguments)
        return fake_sglang.FakeSglangEngine(model_path=arguments["model_path"])

    monkeypatch.setitem(sys.modules, "sglang", types.SimpleNamespace(Engine=build))
    engine = SglangEngine(model_path="Qwen/Qwen2.5-0.5B-Instruct", engine_args={"mem_fraction_static": 0.5})
    await engine.start()
    try:
        _, finished = await run(engine, chat("Say hello."))
    finally:
        await engine.close()

    assert built == [{"model_path": "Qwen/Qwen2.5-0.5B-Instruct", "mem_fraction_static": 0.5}]
    assert finished.output_tokens > 0


async def test_a_reader_let_go_of_before_it_reaches_sglang_never_sends_the_request(fake_sglang_engine) -> None:
    # The consumer can leave between the reader's creation and its first step (a cancel right then).
    from inference.sglang import _StreamReader

    reader = _StreamReader(fake_sglang_engine, rid="run-never", input_ids=[5, 6, 7], sampling_params={})
    await reader.stop(abort=True)
    await asyncio.sleep(0.02)

    assert fake_sglang_engine.received == []
    assert fake_sglang_engine.tokenizer_manager.abort_requests == []
    assert "run-never" not in fake_sglang_engine.scheduler.generated_tokens
