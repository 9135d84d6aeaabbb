"""The prompt builder when the model is offered `file_search` as a tool: no search before the model unless files are attached."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from commands.catalog import COMMAND_TYPES
from events.catalog import EVENT_TYPES
from events.conversation import RunRequested, TurnSubmitted
from events.embedded import EmbeddedLog
from events.runs import InferenceRequested, ToolCalled, ToolReturned
from events.topics import CONVERSATION_EVENTS, RUN_EVENTS
from events.values import ContentPart
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.log import OutgoingRecord
from kernel.runtime import Delivery
from processors.prompting import PromptBuilder, PromptPolicy
from processors.retrieval import DocumentRetriever
from processors.tools.builtin import ToolRouter
from processors.tools.catalog import ToolPolicy
from processors.tools.file_search import DEFAULT_POLICY, FILE_SEARCH, FileSearchTool
from processors.tools.offered import ToolCatalog
from processors.tools.tools_file import BUILTIN_SERVER
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.index import IndexedChunk

pytestmark = pytest.mark.slow  # embeds with the real model

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ANA = Actor(user_id="ana", org_id="acme", workspace_id="research")
TIDES = "Tides rise and fall twice a day because the moon's gravity pulls the oceans."


@pytest.fixture
async def retriever(tmp_path: Path, embedder) -> AsyncIterator[DocumentRetriever]:
    index = EmbeddedSearchIndex(directory=tmp_path / "search")
    await index.start()
    [vector] = await embedder.embed([TIDES])
    await index.upsert([
        IndexedChunk(chunk_id="file_tides:0", file_id="file_tides", org_id="acme", workspace_id="research", owner_id="ana",
                     acl="workspace", title="Tides", location="page 1", ordinal=0, text=TIDES, vector=vector)
    ])
    try:
        yield DocumentRetriever(index=index, embedder=embedder)
    finally:
        await index.close()


class NoServers:
    """A tools file with no MCP tool: the servers' executor offers nothing."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_tools(self, *, actor):
        return []

    def unavailable(self, *, actor):
        return {}

    async def call(self, tool, arguments, *, actor, idempotency_key, timeout_s):
        raise AssertionError("no server tool is called here")


def builder_with(log: EmbeddedLog, retriever: DocumentRetriever, policy: ToolPolicy = DEFAULT_POLICY) -> PromptBuilder:
    executor = ToolRouter(builtin={FILE_SEARCH: FileSearchTool(retriever=retriever, policy=policy)}, servers=NoServers())
    catalog = ToolCatalog(executor=executor, policies={FILE_SEARCH: policy})
    return PromptBuilder(log=log, codec=CODEC, policy=PromptPolicy(system_prompt="SYS"), retriever=retriever, tools=catalog)


async def ask(
    log: EmbeddedLog, builder: PromptBuilder, question: str, *, conversation_id: str, attachments: tuple[str, ...] = (),
    tool_mode: str = "auto",
) -> tuple[InferenceRequested, list[object]]:
    submitted = TurnSubmitted(conversation_id=conversation_id, turn_seq=1, content=(ContentPart(type="text", text=question),),
                              attachments=attachments, submitted_at=NOW)
    requested = RunRequested(conversation_id=conversation_id, run_id=f"run_{conversation_id}", turn_seq=2, parent_turn_seq=1,
                             mode="interactive", tool_mode=tool_mode, request_fingerprint="f", created_turn_seq=1, requested_at=NOW)
    envelopes = [Envelope.wrap(event, key=conversation_id, actor=ANA) for event in (submitted, requested)]
    records = await log.append([OutgoingRecord(topic=CONVERSATION_EVENTS, key=conversation_id, value=CODEC.encode(e)) for e in envelopes])
    outputs = await builder.react([Delivery(record=record, envelope=envelope) for record, envelope in zip(records, envelopes, strict=True)])
    await log.append(outputs)
    [request] = [payload for o in outputs if isinstance(payload := CODEC.decode(o.value).payload, InferenceRequested)]
    run_events = [CODEC.decode(r.value).payload for r in await log.read(RUN_EVENTS, key=f"run_{conversation_id}")]
    return request, [event for event in run_events if isinstance(event, (ToolCalled, ToolReturned))]


async def test_offered_file_search_the_model_searches_itself_and_nothing_is_searched_before_it(embedded_log, retriever) -> None:
    request, searched = await ask(embedded_log, builder_with(embedded_log, retriever), "Why two tides a day?", conversation_id="c1")

    assert searched == [] and request.sources == ()
    assert [tool.name for tool in request.tools] == [FILE_SEARCH]
    assert TIDES not in " ".join(message.content for message in request.messages)


async def test_attached_files_are_still_searched_first_and_file_search_is_offered_besides(embedded_log, retriever) -> None:
    request, searched = await ask(
        embedded_log, builder_with(embedded_log, retriever), "Why two tides a day?", conversation_id="c2", attachments=("file_tides",)
    )

    assert [type(event) for event in searched] == [ToolCalled, ToolReturned]
    assert [source.chunk_id for source in request.sources] == ["file_tides:0"]
    assert [tool.name for tool in request.tools] == [FILE_SEARCH]


async def test_a_run_not_offered_file_search_searches_the_workspace_first_as_before(embedded_log, retriever) -> None:
    elsewhere = ToolPolicy(server=BUILTIN_SERVER, name=FILE_SEARCH, orgs=("globex",))  # not for acme
    request, searched = await ask(embedded_log, builder_with(embedded_log, retriever, elsewhere), "Why two tides a day?", conversation_id="c3")
    assert [type(event) for event in searched] == [ToolCalled, ToolReturned]
    assert request.tools == () and [source.chunk_id for source in request.sources] == ["file_tides:0"]

    request, searched = await ask(
        embedded_log, builder_with(embedded_log, retriever), "Why two tides a day?", conversation_id="c4", tool_mode="none"
    )
    assert searched == [] and request.tools == () and request.sources == ()
