"""Retrieval in a turn: the prompt builder's file_search over a real index and real embeddings, scoped like the run."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from kernel.codec import AvroCodec
from events.conversation import RunRequested, TurnSubmitted
from events.embedded import EmbeddedLog
from kernel.envelope import Envelope
from kernel.log import OutgoingRecord
from events.runs import InferenceRequested, PromptAssembled, ToolCalled, ToolReturned
from events.topics import CONVERSATION_EVENTS, RUN_EVENTS
from kernel.envelope import Actor
from events.values import ContentPart
from inference.instructions import GROUNDED_INSTRUCTIONS, NOTHING_FOUND_INSTRUCTIONS
from processors.prompting import PromptBuilder, PromptPolicy
from processors.retrieval import DocumentRetriever
from kernel.runtime import Delivery
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.index import IndexedChunk

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ANA = Actor(user_id="ana", org_id="acme", workspace_id="research")

TIDES = "Tides rise and fall twice a day because the moon's gravity pulls the oceans."
BUDGET = "The travel budget for the Lisbon offsite is twelve thousand euros."
SECRET = "Bob's private notes: the tide tables in the harbour are wrong on Sundays."
OTHER_ORG = "Globex handbook: tides are caused by the moon pulling the sea, every day twice."
OTHER_WORKSPACE = "Acme marketing: the moon makes the tides, a fact for our ocean campaign."


@pytest.fixture
async def index(tmp_path: Path, embedder) -> AsyncIterator[EmbeddedSearchIndex]:
    index = EmbeddedSearchIndex(directory=tmp_path / "search")
    await index.start()
    placed = [
        ("file_tides", "acme", "research", "ana", "workspace", TIDES),
        ("file_budget", "acme", "research", "ana", "workspace", BUDGET),
        ("file_bob", "acme", "research", "bob", "owner", SECRET),
        ("file_globex", "globex", "research", "ana", "workspace", OTHER_ORG),
        ("file_marketing", "acme", "marketing", "ana", "workspace", OTHER_WORKSPACE),
    ]
    vectors = await embedder.embed([text for *_, text in placed])
    await index.upsert([
        IndexedChunk(chunk_id=f"{file_id}:0", file_id=file_id, org_id=org, workspace_id=workspace, owner_id=owner, acl=acl,
                     title=file_id.removeprefix("file_").title(), location="page 1", ordinal=0, text=text, vector=vector)
        for (file_id, org, workspace, owner, acl, text), vector in zip(placed, vectors)
    ])
    try:
        yield index
    finally:
        await index.close()


async def ask(
    log: EmbeddedLog, builder: PromptBuilder, question: str, *, attachments: tuple[str, ...] = (), tool_mode: str = "auto",
    conversation_id: str = "conv_1",
) -> tuple[InferenceRequested, list[object]]:
    """Submit a turn and request its run on the log; return the builder's request and every run event it wrote."""
    submitted = TurnSubmitted(conversation_id=conversation_id, turn_seq=1, content=(ContentPart(type="text", text=question),),
                              attachments=attachments, submitted_at=NOW)
    requested = RunRequested(conversation_id=conversation_id, run_id=f"run_{conversation_id}", turn_seq=2, parent_turn_seq=1,
                             mode="interactive", tool_mode=tool_mode, request_fingerprint="f", created_turn_seq=1, requested_at=NOW)
    envelopes = [Envelope.wrap(event, key=conversation_id, actor=ANA) for event in (submitted, requested)]
    records = await log.append([OutgoingRecord(topic=CONVERSATION_EVENTS, key=conversation_id, value=CODEC.encode(e)) for e in envelopes])
    outputs = await builder.react([Delivery(record=record, envelope=envelope) for record, envelope in zip(records, envelopes)])
    await log.append(outputs)
    [request] = [CODEC.decode(o.value).payload for o in outputs if isinstance(CODEC.decode(o.value).payload, InferenceRequested)]
    run_events = [CODEC.decode(r.value).payload for r in await log.read(RUN_EVENTS, key=f"run_{conversation_id}")]
    assert isinstance(run_events[-1], PromptAssembled)  # every prompt leaves its manifest
    return request, [event for event in run_events if isinstance(event, (ToolCalled, ToolReturned))]


@pytest.fixture
def builder(embedded_log: EmbeddedLog, index: EmbeddedSearchIndex, embedder) -> PromptBuilder:
    retriever = DocumentRetriever(index=index, embedder=embedder)
    return PromptBuilder(log=embedded_log, codec=CODEC, policy=PromptPolicy(system_prompt="SYS"), retriever=retriever)


async def test_attached_files_are_searched_and_their_passages_numbered_before_the_question(embedded_log, builder) -> None:
    request, run_events = await ask(embedded_log, builder, "Why are there two tides every day?", attachments=("file_tides", "file_budget"))
    assert [type(e) for e in run_events] == [ToolCalled, ToolReturned]
    assert run_events[0].tool_name == "file_search" and run_events[1].status == "completed"
    assert run_events[0].call_id == run_events[1].call_id
    assert [s.chunk_id for s in request.sources][:1] == ["file_tides:0"]
    assert {s.file_id for s in request.sources} <= {"file_tides", "file_budget"}
    roles = [m.role for m in request.messages]
    assert roles == ["system", "system", "system", "user"]  # public prefix, tenant salt, passages, the question
    assert request.messages[2].content.startswith(GROUNDED_INSTRUCTIONS) and "[1] Tides, page 1\n" + TIDES in request.messages[2].content


async def test_a_workspace_search_never_reaches_another_org_workspace_or_someone_elses_private_file(embedded_log, builder) -> None:
    for question in ("tides moon gravity", OTHER_ORG, OTHER_WORKSPACE, SECRET):
        request, _ = await ask(embedded_log, builder, question, conversation_id=f"conv_{abs(hash(question))}")
        assert {s.file_id for s in request.sources} <= {"file_tides", "file_budget"}, question
        prompt = " ".join(m.content for m in request.messages if m.role == "system")
        for foreign in ("Globex handbook", "Acme marketing", "Bob's private notes"):
            assert foreign not in prompt


async def test_attached_files_that_do_not_hold_the_answer_make_the_model_say_so(embedded_log, builder) -> None:
    request, run_events = await ask(embedded_log, builder, "What is the capital of Mongolia?", attachments=("file_budget",))
    assert request.sources == ()
    assert any(m.content == NOTHING_FOUND_INSTRUCTIONS for m in request.messages)
    assert run_events[-1].summary == "0 passage(s) found"


async def test_no_search_when_the_tool_mode_is_none_or_the_workspace_has_no_documents(embedded_log, builder, index) -> None:
    request, run_events = await ask(embedded_log, builder, "tides?", tool_mode="none")
    assert run_events == [] and request.sources == () and len(request.messages) == 3
    await index.delete_file(org_id="acme", workspace_id="research", file_id="file_tides")
    await index.delete_file(org_id="acme", workspace_id="research", file_id="file_budget")
    await index.delete_file(org_id="acme", workspace_id="research", file_id="file_bob")
    request, run_events = await ask(embedded_log, builder, "tides?", conversation_id="conv_2")
    assert run_events == [] and request.sources == ()


async def test_a_workspace_question_the_documents_do_not_cover_is_answered_so(embedded_log, builder) -> None:
    # "budget" is a word of a document, which the old cut took for relevance; the similarity is low.
    request, run_events = await ask(embedded_log, builder, "What budget does the Mongolian space agency have?")
    assert request.sources == ()
    assert any(m.content == NOTHING_FOUND_INSTRUCTIONS for m in request.messages)
    assert [type(e) for e in run_events] == [ToolCalled, ToolReturned] and run_events[-1].summary == "0 passage(s) found"


async def test_greetings_are_answered_normally_without_a_search(embedded_log, builder) -> None:
    for number, greeting in enumerate(("Hello!", "thanks, that helped", "good morning, how are you?")):
        request, run_events = await ask(embedded_log, builder, greeting, conversation_id=f"conv_hi_{number}")
        assert run_events == [] and request.sources == ()
        assert all(m.content != NOTHING_FOUND_INSTRUCTIONS for m in request.messages)
        assert [m.role for m in request.messages] == ["system", "system", "user"]
