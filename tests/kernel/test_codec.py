"""Avro single-object encoding of envelopes and payloads, and schema evolution."""

import dataclasses
import io
import json
import typing
from datetime import UTC, datetime

import fastavro
import pytest
from fastavro.schema import load_schema, parse_schema

import schemas
from commands.catalog import COMMAND_TYPES, SubmitTurn
from kernel.codec import MAGIC, AvroCodec, UndecodableMessage, fingerprint_of
from events.catalog import EVENT_TYPES
from events.conversation import TurnSubmitted
from kernel.envelope import Envelope
from kernel.envelope import Actor
from events.values import ContentPart, Usage
from events.runs import GenerationStarted, RunFinished

ALL_TYPES = (*EVENT_TYPES, *COMMAND_TYPES)
ACTOR = Actor(user_id="u_1", org_id="org_1", workspace_id="ws_1")
NOW = datetime(2026, 4, 25, 17, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(payload_types=ALL_TYPES)


def test_envelope_roundtrip_keeps_every_field(codec: AvroCodec) -> None:
    cause = Envelope.wrap(
        SubmitTurn(conversation_id="conv_1", run_id="run_1", content=(ContentPart(type="text", text="hé 🚀"),),
                   request_fingerprint="f"),
        key="conv_1", actor=ACTOR, occurred_at=NOW,
    )
    effect = Envelope.wrap(
        RunFinished(run_id="run_1", conversation_id="conv_1", turn_seq=2, status="completed",
                    usage=Usage(prompt_tokens=3, output_tokens=4)),
        key="run_1", actor=ACTOR, cause=cause, occurred_at=NOW,
    )
    for envelope in (cause, effect):
        encoded = codec.encode(envelope)
        assert encoded[:2] == MAGIC
        assert codec.decode(encoded) == envelope
    assert codec.decode(codec.encode(effect)).causation_id == cause.event_id
    assert codec.decode(codec.encode(effect)).correlation_id == cause.event_id


def test_single_object_header_names_the_writer_schema(codec: AvroCodec) -> None:
    payload = codec.encode_payload(TurnSubmitted(conversation_id="c", turn_seq=1, content=(), submitted_at=NOW))
    assert payload[2:10] == fingerprint_of(load_schema(str(schemas.DIRECTORY / "TurnSubmitted.avsc")))


@pytest.mark.parametrize("garbage", [b"", b"\x00\x01", b"\xc3\x01" + b"\x00" * 8 + b"x", b"\xc3\x01\xff"])
def test_garbage_is_undecodable_not_a_crash(codec: AvroCodec, garbage: bytes) -> None:
    with pytest.raises(UndecodableMessage):
        codec.decode(garbage)


def test_truncated_body_is_undecodable(codec: AvroCodec) -> None:
    encoded = codec.encode(Envelope.wrap(RunFinished(run_id="r", conversation_id="c", turn_seq=1, status="completed", usage=Usage()),
                                         key="r", actor=ACTOR))
    with pytest.raises(UndecodableMessage):
        codec.decode(encoded[:-5])


def test_bytes_written_with_an_earlier_schema_still_decode(codec: AvroCodec) -> None:
    """TurnSubmitted v1 had no `attachments`; its bytes on the log must still read today."""
    v1 = parse_schema(json.loads((schemas.HISTORY_DIRECTORY / "TurnSubmitted.v1.avsc").read_text()))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, v1, {
        "conversation_id": "conv_1", "turn_seq": 7, "parent_turn_seq": 6,
        "content": [{"type": "text", "text": "old bytes"}], "submitted_at": NOW,
    })
    old_bytes = MAGIC + fingerprint_of(v1) + body.getvalue()
    assert fingerprint_of(v1) != codec.encode_payload(
        TurnSubmitted(conversation_id="c", turn_seq=1, content=(), submitted_at=NOW))[2:10]
    decoded = codec.decode_payload(old_bytes)
    assert decoded == TurnSubmitted(conversation_id="conv_1", turn_seq=7, parent_turn_seq=6,
                                    content=(ContentPart(type="text", text="old bytes"),), attachments=(),
                                    submitted_at=NOW)


@pytest.mark.parametrize("message_type", ALL_TYPES, ids=lambda t: t.__name__)
def test_each_dataclass_matches_its_schema(message_type: type) -> None:
    schema = load_schema(str(schemas.DIRECTORY / f"{message_type.__name__}.avsc"))
    schema_fields = {field["name"]: field for field in schema["fields"]}
    hints = typing.get_type_hints(message_type)
    assert set(schema_fields) == {f.name for f in dataclasses.fields(message_type)}
    for field in dataclasses.fields(message_type):
        has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        assert ("default" in schema_fields[field.name]) == has_default, field.name
        nullable = type(None) in typing.get_args(hints[field.name])
        assert nullable == (isinstance(schema_fields[field.name]["type"], list)), field.name


def test_every_schema_file_has_a_type_or_is_a_shared_value() -> None:
    names = {path.stem for path in schemas.DIRECTORY.glob("*.avsc")}
    shared = {
        "ContentPart", "Actor", "Usage", "ChatMessage", "Source", "Citation", "SummaryFact", "ToolCallProposal", "ToolSpec",
        "ToolCallSummary", "CategoryScore", "RateLimitStatus", "ErasedFile",
        "Envelope", "SealedPayload",
    }
    assert names == {t.__name__ for t in ALL_TYPES} | shared


def _v1_samples():
    from commands.catalog import FinishRun
    from events.conversation import AssistantTurnFinished
    from events.runs import InferenceRequested
    from events.values import ChatMessage

    usage = Usage(prompt_tokens=3, output_tokens=4)
    return [
        InferenceRequested(run_id="r", conversation_id="c", turn_seq=2, pool="interactive",
                           messages=(ChatMessage(role="user", content="hi"),), max_output_tokens=8),
        FinishRun(conversation_id="c", run_id="r", status="completed", text="an answer", usage=usage),
        AssistantTurnFinished(conversation_id="c", run_id="r", turn_seq=2, parent_turn_seq=1, state="completed",
                              content=(ContentPart(type="text", text="an answer"),), usage=usage, mode="interactive",
                              requested_at=NOW, finished_at=NOW),
    ]


def _before_the_route_samples():
    from events.runs import PromptAssembled, UsageRecorded

    return [
        UsageRecorded(run_id="r", conversation_id="c", pool="interactive", engine="cpu", status="completed",
                      prompt_tokens=3, cached_tokens=1, output_tokens=4, recorded_at=NOW),
        PromptAssembled(run_id="r", conversation_id="c", pool="interactive", tokenizer="words", budget_tokens=100,
                        prompt_tokens=12, system_tokens=5, turn_seqs=(1,), history_tokens=0, chunk_ids=(),
                        question_tokens=2, tenant_salt="abc"),
    ]


def _before_tools_samples():
    from events.runs import InferenceRequested
    from events.values import ChatMessage, Source

    source = Source(marker=1, file_id="f", chunk_id="f:0", title="T", location="", text="passage")
    return [
        InferenceRequested(run_id="r", conversation_id="c", turn_seq=2, pool="interactive",
                           messages=(ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")),
                           max_output_tokens=8, sources=(source,)),
    ]


def _before_narrowing_samples():
    from commands.catalog import SubmitTurn
    from events.conversation import RunRequested
    from events.tools import ToolCallsProposed
    from events.values import ToolCallProposal

    return [
        (SubmitTurn(conversation_id="c", run_id="r", content=(ContentPart(type="text", text="hi"),),
                    request_fingerprint="turn:x"), {"tools"}),
        (RunRequested(conversation_id="c", run_id="r", turn_seq=2, parent_turn_seq=1, mode="interactive",
                      request_fingerprint="turn:x", created_turn_seq=1, requested_at=NOW), {"tools"}),
        (ToolCallsProposed(run_id="r", conversation_id="c", step=1, text="", proposed_at=NOW, topic="t",
                           calls=(ToolCallProposal(call_id="call_1", name="add", arguments="{}"),)), {"offered"}),
    ]


def _old_writer_samples():
    before_sources = {"sources", "citations"}
    before_the_route = {"engine_unavailable", "size_class", "fallback_from", "route_reason", "tool_tokens"}
    before_tools = {"tools", "step"}  # and, inside each message, tool_call_id and tool_calls
    return [(sample, before_sources | before_tools, 1) for sample in _v1_samples()] + [
        (sample, before_the_route, 1) for sample in _before_the_route_samples()
    ] + [(sample, before_tools, 2) for sample in _before_tools_samples()] + [
        (GenerationStarted(run_id="r", worker_id="w", pool="interactive"), {"step"}, 1),
    ] + [(sample, new_fields, 1) for sample, new_fields in _before_narrowing_samples()] + [
        (dataclasses.replace(_before_the_route_samples()[1], size_class="short", route_reason="the only pool"), {"tool_tokens"}, 2),
    ] + [(sample, {"tool_calls"}, 2) for sample in _v1_samples()[1:]] + [(_finished_call(), {"sources", "cpu_ms", "memory_bytes", "exit_code"}, 1)] + [
        (_finished_call(sources=(_a_source(),)), {"cpu_ms", "memory_bytes", "exit_code"}, 2),
    ] + _before_safety_samples()


def _before_safety_samples():
    """Written before the safety stages: the manifest's fenced, dropped and redacted parts; the run's replaced text."""
    from events.runs import RunFinished

    manifest = dataclasses.replace(
        _before_the_route_samples()[1], size_class="short", route_reason="the only pool", tool_tokens=7, chunk_ids=("f:0",)
    )
    finished = RunFinished(run_id="r", conversation_id="c", turn_seq=2, status="completed", usage=Usage(prompt_tokens=3, output_tokens=4))
    return [
        (manifest, {"fenced_chunk_ids", "dropped_chunk_ids", "redacted_turn_seqs"}, 3),
        (_v1_samples()[1], {"stream_replaced"}, 3),
        (finished, {"text"}, 1),
    ]


def _a_source():
    from events.values import Source

    return Source(marker=1, file_id="f", chunk_id="f:0", title="T", location="", text="passage")


def _finished_call(sources=()):
    from events.tools import ToolCallFinished

    return ToolCallFinished(run_id="r", call_id="call_1", step=1, tool_name="file_search", status="completed",
                            result="Tides\nThe moon pulls.", attempt=1, finished_at=NOW, runner_id="w", sources=sources)


@pytest.mark.parametrize(
    ("sample", "new_fields", "version"), _old_writer_samples(), ids=lambda value: getattr(type(value), "__name__", "")
)
def test_bytes_written_with_an_old_schema_still_decode(
    codec: AvroCodec, sample: object, new_fields: set[str], version: int
) -> None:
    """Fields added since (sources and citations; the route and engine_unavailable; tools, the step and the
    messages' tool calls) read back as their defaults."""
    name = type(sample).__name__
    old = parse_schema(json.loads((schemas.HISTORY_DIRECTORY / f"{name}.v{version}.avsc").read_text()))
    current = load_schema(str(schemas.DIRECTORY / f"{name}.avsc"))
    record = fastavro.schemaless_reader(io.BytesIO(codec.encode_payload(sample)[10:]), current)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old, {key: value for key, value in record.items() if key not in new_fields})
    old_bytes = MAGIC + fingerprint_of(old) + body.getvalue()
    assert fingerprint_of(old) != fingerprint_of(current)
    assert codec.decode_payload(old_bytes) == sample


def test_a_prompt_with_tools_and_tool_messages_roundtrips(codec: AvroCodec) -> None:
    from events.runs import InferenceRequested
    from events.values import ChatMessage, ToolCallProposal, ToolSpec

    call = ToolCallProposal(call_id="call_1", name="weather", arguments='{"city": "Oslo"}')
    request = InferenceRequested(
        run_id="r", conversation_id="c", turn_seq=2, pool="interactive", max_output_tokens=64, step=2,
        tools=(ToolSpec(name="weather", description="Today's weather", parameters='{"type": "object"}'),),
        messages=(
            ChatMessage(role="user", content="Weather in Oslo?"),
            ChatMessage(role="assistant", content="", tool_calls=(call,)),
            ChatMessage(role="tool", content='{"sky": "clear"}', tool_call_id="call_1"),
        ),
    )
    assert codec.decode_payload(codec.encode_payload(request)) == request


def test_a_finished_call_keeps_the_passages_it_found(codec: AvroCodec) -> None:
    from events.values import Source

    source = Source(marker=1, file_id="file_1", chunk_id="file_1:0", title="Tides", location="page 2", text="The moon pulls.")
    finished = _finished_call(sources=(source,))
    assert codec.decode_payload(codec.encode_payload(finished)) == finished
