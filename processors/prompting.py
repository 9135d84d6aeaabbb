"""The prompt builder: when a run is requested, assemble its prompt from the conversation's history.

The transcript is state folded from `conversation-events`; the prompt is the stable system prefix
first (so engines can reuse its cache), then the turns on the branch being answered, newest last,
within the pool's token budget counted by the engine's own tokenizer, after the rolling summary of
what came before. When the user attached files, or the tool mode is `auto` and the workspace holds
documents, the run searches them first (`file_search`, shown on the run's stream) and the passages
found go in, numbered, just before the question. A greeting or thanks is not searched (`small_talk.py`);
a question no passage passes the relevance gate for (`relevance.py`) gets the instruction to say that
the documents do not cover it. A run whose model is offered `file_search` as a
tool skips that first search unless files are attached: the model searches, with its own query, if at all.

Once the prompt is counted, the router (`inference/routing.py`) picks the run's pool and size class,
and the request goes to that pool's topic for its size. Every prompt is recorded as a
`PromptAssembled` manifest on the run's events, with the route and why. A run no pool can take
ends as failed, with each pool's reason.

With safety policies (`processors/safety/stages.py`), the user turn is checked before anything else: a
refusal ends the run at once, answered with the policy's reason; a redaction puts the redacted text in the
prompt (the stored turn stays as the user wrote it), and earlier user turns and the summary go in as their
own checks left them. Retrieved passages are checked before they go in: fenced ones are wrapped as
untrusted data, dropped ones left out, and the manifest names both. Each decision is appended to the
run's events; an input decision that names abuse (`stages.abuse_categories`) is also the user's violation,
reported to governance (`flagged_input`) in the same append.
"""

import hashlib
import json
import logging
import time

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from kernel import tracing
from kernel.codec import AvroCodec
from events.conversation import ConversationSummarized, RunRequested
from kernel.envelope import Envelope
from kernel.log import EventLog, OutgoingRecord
from commands.catalog import FinishRun
from commands.governance.violations import FLAGGED_INPUT, IgnoredViolations, ViolationReporter
from events.runs import InferenceRequested, PromptAssembled, ToolCalled, ToolReturned
from events.safety import SafetyDecision
from events.topics import COMMANDS, CONVERSATION_EVENTS, RUN_EVENTS
from kernel.envelope import Actor
from events.values import ChatMessage, Source, SummaryFact, ToolSpec, Usage
from processors.grounding import DEFAULT_MAX_SOURCES, DEFAULT_SOURCE_TOKENS, choose_passages, grounding_message
from processors.newest_summaries import NewestSummaries
from processors.small_talk import is_small_talk
from processors.transcripts import (
    TRANSCRIPT_CACHE_CHARACTERS, Transcript, TranscriptTurn, branch_of, evolve_transcript, transcript_before,
    transcript_weight,
)
from inference.pools import PoolsConfig, default_pools
from inference.routing import NoPoolAvailable, PoolHealth, RouteDecision, RouteRequest, route
from inference.tokenizers import PromptTokenizer, WordTokenizer
from kernel.keyed_state import DEFAULT_CAPACITY, KeyedStates
from kernel.snapshots import SnapshotSource
from processors.summaries import SummaryPolicy, summary_text
from processors.retrieval import DocumentRetriever, scope_of
from kernel.runtime import Delivery, Processor, encode
from projections.search.index import SearchScope
from processors.tools.file_search import FILE_SEARCH
from processors.tools.offered import ToolCatalog
from processors.safety.stages import WITHHELD_TURN, InputScreening, RunSubject, SafetyStages

logger = logging.getLogger(__name__)

PROMPTING_GROUP = "prompt-builder"
REPORTED_BY = "safety:input"  # who reports a flagged input to governance
SYSTEM_PROMPT = "You are turnlog, a helpful assistant. Answer clearly and concisely."


@dataclass(frozen=True, kw_only=True)
class PromptPolicy:
    pool: str = "interactive"
    max_output_tokens: int = 512
    context_tokens: int = 8_192  # the pool's context window
    max_source_tokens: int = DEFAULT_SOURCE_TOKENS  # the retrieved passages' share of the prompt
    max_sources: int = DEFAULT_MAX_SOURCES  # passages at most, however short
    system_prompt: str = SYSTEM_PROMPT
    # Salt every tenant's content behind its own prefix, so no engine cache entry is shared across tenants.
    salt_tenant_prefix: bool = True

    @property
    def budget_tokens(self) -> int:
        """What the prompt may take: the context window less the room kept for the answer."""
        return self.context_tokens - self.max_output_tokens


@dataclass(frozen=True, kw_only=True)
class Grounding:
    """What a document search gave the run: the passages (maybe none) the prompt must stand on."""

    sources: tuple[Source, ...] = ()
    also_in: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # chunk id -> where else its text appears


@dataclass(frozen=True, kw_only=True)
class PromptScreening:
    """What the safety stages changed in a prompt: passages fenced or left out, user turns redacted or withheld."""

    fenced_chunk_ids: tuple[str, ...] = ()
    dropped_chunk_ids: tuple[str, ...] = ()
    redacted_turn_seqs: tuple[int, ...] = ()


def tenant_salt(org_id: str) -> str:
    """A stable, opaque per-tenant token: placed after the public prefix, it keeps cache entries apart."""
    return hashlib.blake2b(org_id.encode(), digest_size=8, person=b"turnlog-salt").hexdigest()


@dataclass(frozen=True, kw_only=True)
class AssembledPrompt:
    request: InferenceRequested
    manifest: PromptAssembled


def build_prompt(
    transcript: Transcript,
    run: RunRequested,
    policy: PromptPolicy,
    *,
    tokenizer: PromptTokenizer,
    grounding: Grounding | None = None,
    summary: ConversationSummarized | None = None,
    salt: str = "",
    tools: Sequence[ToolSpec] = (),
    screening: PromptScreening = PromptScreening(),
) -> AssembledPrompt:
    """The prompt answering `run.parent_turn_seq`, within the pool's token budget, and its manifest.

    Order: the public system prefix (shared by every tenant, so engines reuse its cache), the
    tenant's salt, the rolling summary, the newest turns of the branch that fit, the retrieved
    passages, and the question. Turns the summary covers are left out; older turns that do not fit
    wait for the next summary. The tools offered to the model take their share of the budget first.
    `screening` says which passages are fenced (and records what the safety stages changed in the manifest).
    """
    branch = [(seq, turn) for seq, turn in branch_of(transcript, run.parent_turn_seq) if turn.text.strip()]
    question = branch.pop() if branch and branch[-1][1].role == "user" else None
    if summary is not None:
        branch = [(seq, turn) for seq, turn in branch if seq > summary.through_turn_seq]
    prefix = [ChatMessage(role="system", content=policy.system_prompt)]
    if salt:
        prefix.append(ChatMessage(role="system", content=f"Conversation scope: {salt}."))
    summary_message = (
        [ChatMessage(role="system", content=summary_text(summary.facts))] if summary is not None and summary.facts else []
    )
    grounding_messages = (
        [ChatMessage(role="system", content=grounding_message(grounding.sources, fenced=screening.fenced_chunk_ids, also_in=grounding.also_in))]
        if grounding is not None
        else []
    )
    question_messages = [ChatMessage(role="user", content=question[1].text)] if question is not None else []

    def assemble(kept: list[tuple[int, TranscriptTurn]]) -> list[ChatMessage]:
        history = [ChatMessage(role=turn.role, content=turn.text) for _, turn in kept]
        return [*prefix, *summary_message, *history, *grounding_messages, *question_messages]

    # Newest turns first while their estimated cost fits, then one exact count of the whole prompt.
    overhead = _message_overhead(tokenizer)
    tool_tokens = tool_definition_tokens(tools, tokenizer)
    budget = policy.budget_tokens - tool_tokens
    remaining = budget - tokenizer.count_messages(assemble([]))
    kept: list[tuple[int, TranscriptTurn]] = []
    for seq, turn in reversed(branch):
        cost = tokenizer.count(turn.text) + overhead
        if cost > remaining:
            break
        kept.insert(0, (seq, turn))
        remaining -= cost
    messages = assemble(kept)
    prompt_tokens = tokenizer.count_messages(messages)
    while prompt_tokens > budget and kept:
        kept.pop(0)
        messages = assemble(kept)
        prompt_tokens = tokenizer.count_messages(messages)
    sources = grounding.sources if grounding is not None else ()
    request = InferenceRequested(
        run_id=run.run_id,
        conversation_id=run.conversation_id,
        turn_seq=run.turn_seq,
        pool=policy.pool,
        messages=tuple(messages),
        max_output_tokens=policy.max_output_tokens,
        sources=sources,
        tools=tuple(tools),
    )
    manifest = PromptAssembled(
        run_id=run.run_id,
        conversation_id=run.conversation_id,
        pool=policy.pool,
        tokenizer=tokenizer.name,
        budget_tokens=policy.budget_tokens,
        prompt_tokens=prompt_tokens + tool_tokens,
        tool_tokens=tool_tokens,
        system_tokens=tokenizer.count_messages(prefix),
        summary_version=summary.version if summary is not None else None,
        summary_through_turn_seq=summary.through_turn_seq if summary is not None else None,
        summary_tokens=sum(tokenizer.count(message.content) for message in summary_message),
        turn_seqs=tuple(seq for seq, _ in kept) + ((question[0],) if question is not None else ()),
        history_tokens=sum(tokenizer.count(turn.text) for _, turn in kept),
        chunk_ids=tuple(source.chunk_id for source in sources),
        source_tokens=sum(tokenizer.count(message.content) for message in grounding_messages),
        question_tokens=tokenizer.count(question[1].text) if question is not None else 0,
        tenant_salt=salt,
        fenced_chunk_ids=tuple(source.chunk_id for source in sources if source.chunk_id in screening.fenced_chunk_ids),
        dropped_chunk_ids=screening.dropped_chunk_ids,
        redacted_turn_seqs=screening.redacted_turn_seqs,
    )
    return AssembledPrompt(request=request, manifest=manifest)


def tool_definition_tokens(tools: Sequence[ToolSpec], tokenizer: PromptTokenizer) -> int:
    """What offering `tools` costs in the prompt: each definition as the JSON a chat template renders."""
    if not tools:
        return 0
    definitions = [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": json.loads(t.parameters or "{}")}}
        for t in tools
    ]
    return tokenizer.count(json.dumps(definitions))


def _message_overhead(tokenizer: PromptTokenizer) -> int:
    """Tokens a chat template adds around one message (role markers, separators)."""
    one = tokenizer.count_messages([ChatMessage(role="user", content="hello")])
    two = tokenizer.count_messages([ChatMessage(role="user", content="hello")] * 2)
    return max(0, two - one - tokenizer.count("hello"))


def routed(prompt: AssembledPrompt, decision: RouteDecision) -> AssembledPrompt:
    """The prompt bound for the pool the router chose, its manifest saying where and why."""
    return AssembledPrompt(
        request=replace(prompt.request, pool=decision.pool),
        manifest=replace(
            prompt.manifest, pool=decision.pool, size_class=decision.size_class, fallback_from=decision.fallback_from,
            route_reason=decision.reason,
        ),
    )


class PromptBuilder:
    """Reacts to `RunRequested` with an `InferenceRequested` on the topic of the pool and size class the router picks."""

    def __init__(
        self,
        *,
        log: EventLog,
        codec: AvroCodec,
        policy: PromptPolicy,
        tokenizer: PromptTokenizer | None = None,
        retriever: DocumentRetriever | None = None,
        pools: PoolsConfig | None = None,
        health: PoolHealth | None = None,
        clock: Callable[[], float] = time.monotonic,
        tools: ToolCatalog | None = None,
        safety: SafetyStages | None = None,
        violations: ViolationReporter | None = None,  # where flagged inputs are reported (default: nowhere)
        cached_conversations: int = DEFAULT_CAPACITY,  # transcripts kept in memory (besides their byte budget)
        summary_policy: SummaryPolicy | None = None,  # the summarizer's: which conversations can have a summary
        transcripts: SnapshotSource[Transcript] | None = None,  # where a miss loads from (on Kafka, the store)
    ) -> None:
        self._log = log
        self._codec = codec
        self._policy = policy
        self._summary_policy = summary_policy or SummaryPolicy()
        self._tokenizer = tokenizer or WordTokenizer()
        self._retriever = retriever
        self._pools = pools or default_pools()
        # The breakers, fed by the workers' outcomes (`processors/pool_health.py`); each builder keeps its own view.
        self.health = health or PoolHealth.for_pools(self._pools)
        self._clock = clock
        self._tools = tools
        self._safety = safety
        self._violations = violations or IgnoredViolations()
        self._transcripts = KeyedStates(
            log=log, codec=codec, topic=CONVERSATION_EVENTS, initial=Transcript(), evolve=evolve_transcript,
            capacity=cached_conversations, weigh=transcript_weight, budget=TRANSCRIPT_CACHE_CHARACTERS,
            snapshots=transcripts,
        )
        self._summaries = NewestSummaries(log=log, codec=codec, capacity=cached_conversations)

    async def follow_summaries(self) -> None:
        """Keep the conversations' newest summaries current from the log, until cancelled: a prompt then reads none."""
        await self._summaries.follow()

    def processor(self) -> Processor:
        # Not durable: what it writes is derived from a durable `RunRequested`, and its position commits with it, so a
        # machine crash that takes the prompt back takes the position too and the prompt is built again. (A later
        # durable append makes it durable anyway: the embedded log's writes survive in order.)
        return Processor(
            group=PROMPTING_GROUP, topics=(CONVERSATION_EVENTS,), react=self.react, on_reset=self._transcripts.clear,
            durable=False,
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        outputs = []
        for delivery in deliveries:
            envelope = delivery.envelope
            # Loaded as of just before this event, then advanced by it: each event folds in once.
            transcript = await transcript_before(self._transcripts, delivery)
            if isinstance(envelope.payload, RunRequested):
                with tracing.reacting_to(envelope):  # the search, the checks and the route are spans of this run's trace
                    outputs.extend(await self._prompt(transcript, envelope))
            self._transcripts.apply(envelope.key, envelope)
        return outputs

    async def _prompt(self, transcript: Transcript, envelope: Envelope[RunRequested]) -> list[OutgoingRecord]:
        """The run's prompt on its pool's topic, with its manifest and what the search and the safety stages did."""
        # A conversation too short to have a summary skips the read: on Kafka a lookup of the broker on the first
        # token's path, for every turn of most conversations.
        summary = None
        if self._summary_policy.may_have_summary(len(transcript.turns)):
            summary = await self._summaries.of(envelope.key)
        screening = PromptScreening()
        checked: list[OutgoingRecord] = []
        # The search reads the question as the user wrote it (the index is the org's own); the model, as screened.
        searched = transcript
        if self._safety is not None:
            transcript, summary, input_screening, redacted = await self._screened_input(transcript, summary, envelope)
            checked.extend(self._input_decided(input_screening, envelope))
            if input_screening.refusal is not None:
                return [*checked, self._refused(input_screening.refusal, envelope)]
            screening = PromptScreening(redacted_turn_seqs=redacted)
        grounding, tool_events = await self._ground(searched, envelope)
        checked.extend(tool_events)  # the search's result, then what the context stage made of its passages
        if self._safety is not None and grounding is not None and grounding.sources:
            grounding, screening, context_events = await self._screened_context(grounding, screening, transcript, envelope)
            checked.extend(context_events)
        prompt = build_prompt(
            transcript,
            envelope.payload,
            self._policy,
            tokenizer=self._tokenizer,
            grounding=grounding,
            summary=summary,
            salt=tenant_salt(envelope.actor.org_id) if self._policy.salt_tenant_prefix else "",
            tools=await self._offered_tools(envelope),
            screening=screening,
        )
        return [*checked, *self._route(prompt, envelope)]

    async def _screened_input(
        self, transcript: Transcript, summary: ConversationSummarized | None, envelope: Envelope[RunRequested]
    ) -> tuple[Transcript, ConversationSummarized | None, InputScreening, tuple[int, ...]]:
        """The input stage: the user turn checked, and the branch's user turns and summary as the prompt may carry them.

        Returns the transcript and summary to build from, the user turn's screening, and the turns that changed.
        """
        assert self._safety is not None
        run, org_id = envelope.payload, envelope.actor.org_id
        question = transcript.turns.get(run.parent_turn_seq)
        if question is None or question.role != "user":
            return transcript, summary, InputScreening(prompt_text=""), ()
        subject = RunSubject(run_id=run.run_id, conversation_id=run.conversation_id, turn_seq=run.parent_turn_seq, org_id=org_id)
        screening = await self._safety.input(question.text, subject=subject)
        if screening.refusal is not None:
            return transcript, summary, screening, ()
        carried = {run.parent_turn_seq: screening.prompt_text}
        through = summary.through_turn_seq if summary is not None else 0
        for seq, turn in branch_of(transcript, run.parent_turn_seq):
            if turn.role == "user" and seq != run.parent_turn_seq and seq > through:
                earlier = await self._safety.earlier(turn.text, org_id=org_id)
                carried[seq] = WITHHELD_TURN if earlier is None else earlier
        changed = {seq: text for seq, text in carried.items() if text != transcript.turns[seq].text}
        turns = {**transcript.turns, **{seq: replace(transcript.turns[seq], text=text) for seq, text in changed.items()}}
        if summary is not None and summary.facts:
            facts = tuple(
                SummaryFact(turn_seq=fact.turn_seq, text=await self._safety.redacted(fact.text, org_id=org_id))
                for fact in summary.facts
            )
            summary = replace(summary, facts=facts)
        return replace(transcript, turns=turns), summary, screening, tuple(sorted(changed))

    def _input_decided(self, screening: InputScreening, envelope: Envelope[RunRequested]) -> list[OutgoingRecord]:
        """The input stage's decision on the run's events and, when it names abuse, the user's violation caused by it."""
        if screening.decision is None:
            return []
        decided = Envelope.wrap(screening.decision, key=screening.decision.run_id, actor=envelope.actor, cause=envelope)
        records = [encode(self._codec, decided, topic=RUN_EVENTS)]
        if screening.violations:
            records += self._violations.records(
                actor=envelope.actor, kind=FLAGGED_INPUT, detail=", ".join(screening.violations), by=REPORTED_BY, cause=decided
            )
        return records

    async def _screened_context(
        self, grounding: Grounding, screening: PromptScreening, transcript: Transcript, envelope: Envelope[RunRequested]
    ) -> tuple[Grounding | None, PromptScreening, list[OutgoingRecord]]:
        """The context stage over the retrieved passages: dropped ones leave (the rest renumbered), fenced ones are marked."""
        assert self._safety is not None
        run = envelope.payload
        subject = RunSubject(run_id=run.run_id, conversation_id=run.conversation_id, turn_seq=run.turn_seq, org_id=envelope.actor.org_id)
        checked = await self._safety.context([(source.chunk_id, source.text) for source in grounding.sources], subject=subject)
        kept = [source for source in grounding.sources if source.chunk_id not in checked.dropped]
        sources = tuple(replace(source, marker=number) for number, source in enumerate(kept, start=1))
        question = transcript.turns.get(run.parent_turn_seq)
        attached = question is not None and bool(question.attachments)
        # Everything a workspace search found was dropped: as if it found nothing (attached files still say so).
        kept_grounding = Grounding(sources=sources, also_in=grounding.also_in) if sources or attached else None
        screening = replace(screening, fenced_chunk_ids=checked.fenced, dropped_chunk_ids=checked.dropped)
        return kept_grounding, screening, [self._run_event(decision, envelope) for decision in checked.decisions]

    def _refused(self, refusal: str, envelope: Envelope[RunRequested]) -> OutgoingRecord:
        """The run of a refused turn ends at once, completed, answered with the policy's reason (nothing streamed)."""
        run = envelope.payload
        finish = FinishRun(
            conversation_id=run.conversation_id, run_id=run.run_id, status="completed", text=refusal, reason=refusal,
            usage=Usage(), stream_replaced=True,
        )
        return encode(self._codec, Envelope.wrap(finish, key=finish.conversation_id, actor=envelope.actor, cause=envelope), topic=COMMANDS)

    def _route(self, prompt: AssembledPrompt, envelope: Envelope[RunRequested]) -> list[OutgoingRecord]:
        """The manifest and the request on its pool's topic; or, when no pool can take the run, its failure."""
        owner = envelope.actor
        request = RouteRequest(
            prompt_tokens=prompt.manifest.prompt_tokens,
            max_output_tokens=prompt.request.max_output_tokens,
            tenant_tier=self._pools.tenants.tier_of(owner.org_id),
            tenant_id=owner.org_id,
            background=envelope.payload.mode == "background",
        )
        try:
            with tracing.span("route", attributes={"turnlog.prompt_tokens": request.prompt_tokens}) as routing:
                decision = route(request, self._pools, self.health, self._clock())
                if routing.is_recording():
                    routing.set_attributes(_route_attributes(decision))
        except NoPoolAvailable as error:
            logger.warning("run %s: %s", prompt.request.run_id, error.detail)
            failed = FinishRun(
                conversation_id=prompt.request.conversation_id, run_id=prompt.request.run_id, status="failed", text="",
                reason=error.detail, usage=Usage(), sources=(), citations=(),
            )
            finish = Envelope.wrap(failed, key=failed.conversation_id, actor=owner, cause=envelope)
            unrouted = replace(prompt.manifest, pool="", route_reason=error.detail)
            return [self._run_event(unrouted, envelope), encode(self._codec, finish, topic=COMMANDS)]
        prompt = routed(prompt, decision)
        request_envelope = Envelope.wrap(prompt.request, key=prompt.request.run_id, actor=owner, cause=envelope)
        # The manifest first: whoever sees the request can already explain it.
        return [self._run_event(prompt.manifest, envelope), encode(self._codec, request_envelope, topic=decision.topic)]

    async def _offered_tools(self, envelope: Envelope[RunRequested]) -> list[ToolSpec]:
        """The tools the run's owner may use, offered to the model (none when the turn says `toolMode: none`).

        A turn that names tools gets only those of them its owner may use: naming never widens.
        """
        run = envelope.payload
        if self._tools is None or run.tool_mode == "none" or run.tools == ():
            return []
        specs = await self._tools.specs(envelope.actor)
        return [spec for spec in specs if run.tools is None or spec.name in run.tools]

    async def _ground(self, transcript: Transcript, envelope: Envelope[RunRequested]) -> tuple[Grounding | None, list[OutgoingRecord]]:
        """Search the documents the run may use, if any; the grounding and the tool's stream events."""
        run, owner = envelope.payload, envelope.actor
        question = transcript.turns.get(run.parent_turn_seq)
        if self._retriever is None or question is None or question.role != "user" or run.tool_mode == "none":
            return None, []
        if is_small_talk(question.text):
            return None, []  # a greeting or thanks is answered as it is, never "the documents do not cover it"
        attached = question.attachments
        if not attached and any(spec.name == FILE_SEARCH for spec in await self._offered_tools(envelope)):
            return None, []  # the model searches the workspace itself (`processors/tools/file_search.py`)
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
        chosen = choose_passages(
            hits, max_tokens=self._policy.max_source_tokens, count_tokens=self._retriever.count_tokens,
            max_sources=self._policy.max_sources,
        )
        sources = chosen.sources
        collapsed = sum(len(places) for places in chosen.also_in.values())
        returned = ToolReturned(
            run_id=run.run_id, call_id=call_id, tool_name="file_search", status=status,
            summary=summary or f"{len(sources)} passage(s) found" + (f", {collapsed} duplicate(s) collapsed" if collapsed else ""),
        )
        if status == "failed" and not attached:
            # The index is down: the question is answered as asked (the stream says the search failed).
            return None, [self._run_event(returned, envelope)]
        # Nothing passed the relevance gate: the answer says the documents do not cover the question.
        return Grounding(sources=sources, also_in=chosen.also_in), [self._run_event(returned, envelope)]

    def _run_event(self, event: ToolCalled | ToolReturned | PromptAssembled | SafetyDecision, cause: Envelope) -> OutgoingRecord:
        return encode(self._codec, Envelope.wrap(event, key=event.run_id, actor=cause.actor, cause=cause), topic=RUN_EVENTS)


def _route_attributes(decision: RouteDecision) -> dict[str, str]:
    attributes = {"turnlog.pool": decision.pool, "turnlog.size_class": decision.size_class, "turnlog.route_reason": decision.reason}
    if decision.fallback_from:
        attributes["turnlog.fallback_from"] = decision.fallback_from
    return attributes


def _scope(owner: Actor, attached: tuple[str, ...]) -> SearchScope:
    """The run searches as its conversation's owner, in its workspace: never wider than they may see."""
    return scope_of(owner, attached)
