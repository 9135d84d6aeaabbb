"""The prompt builder: when a run is requested, assemble its prompt from the conversation's history.

The transcript is state folded from `conversation-events`; the prompt is the stable system prefix
first (so engines can reuse its cache), then the turns on the branch being answered, newest last,
within a character budget (token-exact budgets and rolling summaries come with the router). When the
user attached files, or the tool mode is `auto` and the workspace holds documents, the run searches
them first (`file_search`, shown on the run's stream) and the passages found go in, numbered, just
before the question.
"""

import json
import logging

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from events.codec import AvroCodec
from events.conversation import AssistantTurnFinished, RunRequested, TurnSubmitted
from events.envelope import Envelope
from events.log import EventLog, OutgoingRecord
from events.runs import InferenceRequested, ToolCalled, ToolReturned
from events.topics import CONVERSATION_EVENTS, RUN_EVENTS, topic_of
from events.values import Actor, ChatMessage, Source, text_of
from processors.grounding import grounding_message, numbered_sources
from processors.keyed_state import KeyedStates
from processors.retrieval import DocumentRetriever
from processors.runtime import Delivery, Processor, encode
from projections.search.index import SearchScope

logger = logging.getLogger(__name__)

PROMPTING_GROUP = "prompt-builder"
SYSTEM_PROMPT = "You are turnlog, a helpful assistant. Answer clearly and concisely."


@dataclass(frozen=True, kw_only=True)
class TranscriptTurn:
    role: str
    text: str
    parent_turn_seq: int | None
    attachments: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Transcript:
    turns: Mapping[int, TranscriptTurn] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, kw_only=True)
class PromptPolicy:
    pool: str = "interactive"
    max_output_tokens: int = 512
    max_history_chars: int = 6_000
    max_source_tokens: int = 1_500
    system_prompt: str = SYSTEM_PROMPT


def evolve_transcript(transcript: Transcript, envelope: Envelope) -> Transcript:
    event = envelope.payload
    match event:
        case TurnSubmitted():
            turn = TranscriptTurn(
                role="user", text=text_of(event.content), parent_turn_seq=event.parent_turn_seq, attachments=event.attachments
            )
        case AssistantTurnFinished():
            # A failed answer stays in the chain of parents but says nothing to the model.
            text = "" if event.state == "failed" else text_of(event.content)
            turn = TranscriptTurn(role="assistant", text=text, parent_turn_seq=event.parent_turn_seq)
        case _:
            return transcript
    return replace(transcript, turns={**transcript.turns, event.turn_seq: turn})


@dataclass(frozen=True, kw_only=True)
class Grounding:
    """What a document search gave the run: the passages (maybe none) the prompt must stand on."""

    sources: tuple[Source, ...] = ()


def build_prompt(
    transcript: Transcript, run: RunRequested, policy: PromptPolicy, *, grounding: Grounding | None = None
) -> InferenceRequested:
    """The inference request answering `run.parent_turn_seq`: the branch it belongs to, newest turns kept."""
    branch: list[TranscriptTurn] = []
    seq: int | None = run.parent_turn_seq
    budget = policy.max_history_chars
    while seq is not None and seq in transcript.turns:
        turn = transcript.turns[seq]
        seq = turn.parent_turn_seq
        if not turn.text.strip():
            continue
        if branch and len(turn.text) > budget:
            break  # the newest turns matter most; older ones wait for summaries
        branch.append(turn)
        budget -= len(turn.text)
    messages = [ChatMessage(role="system", content=policy.system_prompt)]
    messages.extend(ChatMessage(role=turn.role, content=turn.text) for turn in reversed(branch))
    if grounding is not None:
        # Retrieved context sits just before the question: the prefix before it stays cacheable.
        messages.insert(len(messages) - 1, ChatMessage(role="system", content=grounding_message(grounding.sources)))
    return InferenceRequested(
        run_id=run.run_id,
        conversation_id=run.conversation_id,
        turn_seq=run.turn_seq,
        pool=policy.pool,
        messages=tuple(messages),
        max_output_tokens=policy.max_output_tokens,
        sources=grounding.sources if grounding is not None else (),
    )


class PromptBuilder:
    """Reacts to `RunRequested` with an `InferenceRequested` on the pool's topic."""

    def __init__(
        self, *, log: EventLog, codec: AvroCodec, policy: PromptPolicy, retriever: DocumentRetriever | None = None
    ) -> None:
        self._log = log
        self._codec = codec
        self._policy = policy
        self._retriever = retriever
        self._transcripts = KeyedStates(
            log=log, codec=codec, topic=CONVERSATION_EVENTS, initial=Transcript(), evolve=evolve_transcript
        )

    def processor(self) -> Processor:
        return Processor(
            group=PROMPTING_GROUP, topics=(CONVERSATION_EVENTS,), react=self.react, on_reset=self._transcripts.clear
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        outputs = []
        for delivery in deliveries:
            envelope = delivery.envelope
            # Loaded as of just before this event, then advanced by it: each event folds in once.
            transcript = await self._transcripts.get(envelope.key, before=delivery.record.offset)
            if isinstance(envelope.payload, RunRequested):
                grounding, tool_events = await self._ground(transcript, envelope)
                request = build_prompt(transcript, envelope.payload, self._policy, grounding=grounding)
                out = Envelope.wrap(request, key=request.run_id, actor=envelope.actor, cause=envelope)
                outputs.extend(tool_events)
                outputs.append(encode(self._codec, out, topic=topic_of(request)))
            self._transcripts.apply(envelope.key, envelope)
        return outputs

    async def _ground(self, transcript: Transcript, envelope: Envelope[RunRequested]) -> tuple[Grounding | None, list[OutgoingRecord]]:
        """Search the documents the run may use, if any; the grounding and the tool's stream events."""
        run, owner = envelope.payload, envelope.actor
        question = transcript.turns.get(run.parent_turn_seq)
        if self._retriever is None or question is None or question.role != "user" or run.tool_mode == "none":
            return None, []
        attached = question.attachments
        if not attached and not await self._retriever.has_documents(org_id=owner.org_id, workspace_id=owner.workspace_id):
            return None, []
        call_id = f"tc_{run.run_id.removeprefix('run_')}"
        called = ToolCalled(
            run_id=run.run_id, call_id=call_id, tool_name="file_search",
            arguments=json.dumps({"query": question.text, "fileIds": list(attached) or None}),
        )
        # Shown at once, so a client sees the search while it runs (a retried batch may repeat it).
        await self._log.append([self._run_event(called, envelope)], durable=False)
        try:
            hits = await self._retriever.search(_scope(owner, attached), question.text)
        except Exception as error:  # the index is down: answer without it, and say so on the stream
            logger.exception("file_search failed for run %s", run.run_id)
            hits, status, summary = [], "failed", f"the document search failed: {type(error).__name__}"
        else:
            status, summary = "completed", ""
        sources = numbered_sources(
            hits, max_tokens=self._policy.max_source_tokens, count_tokens=self._retriever.count_tokens
        )
        returned = ToolReturned(
            run_id=run.run_id, call_id=call_id, tool_name="file_search", status=status,
            summary=summary or f"{len(sources)} passage(s) found",
        )
        if not sources and not attached:
            # A workspace search that found nothing leaves the question as it was asked; only files the
            # user attached make "the documents do not cover it" the answer.
            return None, [self._run_event(returned, envelope)]
        return Grounding(sources=sources), [self._run_event(returned, envelope)]

    def _run_event(self, event: ToolCalled | ToolReturned, cause: Envelope) -> OutgoingRecord:
        return encode(self._codec, Envelope.wrap(event, key=event.run_id, actor=cause.actor, cause=cause), topic=RUN_EVENTS)


def _scope(owner: Actor, attached: tuple[str, ...]) -> SearchScope:
    """The run searches as its conversation's owner, in its workspace: never wider than they may see."""
    return SearchScope(
        org_id=owner.org_id, workspace_id=owner.workspace_id, user_id=owner.user_id, file_ids=attached or None
    )
