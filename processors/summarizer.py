"""The summarizer: when a conversation's unsummarized history outgrows its budget, roll it into the summary.

It follows `conversation-events` and, after each answer, looks at the turns of that answer's branch
that no summary covers yet. Past `trigger_tokens` it folds all but the newest `keep_recent_turns`
into the rolling summary and appends `ConversationSummarized` (a new version) to the compacted
`conversation-summaries` topic, where the prompt builder reads it. Summaries are derived: lag is
allowed, and replaying the history rebuilds them.
"""

from collections.abc import Sequence

from kernel.codec import AvroCodec
from events.conversation import AssistantTurnFinished, ConversationSummarized
from kernel.envelope import Envelope, utc_now
from kernel.log import EventLog, OutgoingRecord
from events.topics import CONVERSATION_EVENTS, SUMMARIES
from inference.tokenizers import PromptTokenizer
from kernel.keyed_state import DEFAULT_CAPACITY, KeyedStates
from kernel.snapshots import SnapshotSource
from processors.transcripts import (
    TRANSCRIPT_CACHE_CHARACTERS, Transcript, branch_of, evolve_transcript, transcript_before, transcript_weight,
)
from kernel.runtime import Delivery, Processor, encode
from processors.summaries import FoldedTurn, SummaryPolicy, roll_summary

SUMMARIZER_GROUP = "summarizer"


def next_summary(
    transcript: Transcript,
    answered_turn_seq: int,
    latest: ConversationSummarized | None,
    policy: SummaryPolicy,
    *,
    count_tokens,
    conversation_id: str,
) -> ConversationSummarized | None:
    """The summary to publish after `answered_turn_seq`, or None while the history still fits."""
    through = latest.through_turn_seq if latest is not None else 0
    pending = [(seq, turn) for seq, turn in branch_of(transcript, answered_turn_seq) if seq > through]
    if sum(count_tokens(turn.text) for _, turn in pending) <= policy.trigger_tokens:
        return None
    folded = pending[: max(0, len(pending) - policy.keep_recent_turns)]
    if not folded:
        return None
    facts = roll_summary(
        latest.facts if latest is not None else (),
        [FoldedTurn(turn_seq=seq, role=turn.role, text=turn.text) for seq, turn in folded],
        max_tokens=policy.max_tokens,
        count_tokens=count_tokens,
    )
    return ConversationSummarized(
        conversation_id=conversation_id,
        version=(latest.version if latest is not None else 0) + 1,
        through_turn_seq=folded[-1][0],
        facts=facts,
        summarized_at=utc_now(),
    )


class Summarizer:
    """Keeps every conversation's rolling summary within reach of its prompts."""

    def __init__(
        self, *, log: EventLog, codec: AvroCodec, tokenizer: PromptTokenizer, policy: SummaryPolicy | None = None,
        cached_conversations: int = DEFAULT_CAPACITY, transcripts: SnapshotSource[Transcript] | None = None,
    ) -> None:
        self._codec = codec
        self._tokenizer = tokenizer
        self._policy = policy or SummaryPolicy()
        self._transcripts = KeyedStates(
            log=log, codec=codec, topic=CONVERSATION_EVENTS, initial=Transcript(), evolve=evolve_transcript,
            capacity=cached_conversations, weigh=transcript_weight, budget=TRANSCRIPT_CACHE_CHARACTERS,
            snapshots=transcripts,  # where a miss loads from (on Kafka, the store)
        )
        # The summarizer is the only writer of summaries: its cache follows its own appends.
        self._summaries: KeyedStates[ConversationSummarized | None] = KeyedStates(
            log=log, codec=codec, topic=SUMMARIES, initial=None, evolve=lambda _, envelope: envelope.payload,
            capacity=cached_conversations,
        )

    def processor(self) -> Processor:
        # Summaries may lag: batching a tenth of a second of history keeps its commits off the hot path.
        return Processor(
            group=SUMMARIZER_GROUP, topics=(CONVERSATION_EVENTS,), react=self.react, on_reset=self._reset,
            durable=False, max_batch=2_000, linger_s=0.1, background=True,
        )

    def _reset(self) -> None:
        self._transcripts.clear()
        self._summaries.clear()

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        outputs: list[OutgoingRecord] = []
        for delivery in deliveries:
            envelope = delivery.envelope
            await transcript_before(self._transcripts, delivery)
            transcript = self._transcripts.apply(envelope.key, envelope)
            event = envelope.payload
            if not isinstance(event, AssistantTurnFinished) or event.state == "failed":
                continue
            summary = next_summary(
                transcript,
                event.turn_seq,
                await self._summaries.get(envelope.key),
                self._policy,
                count_tokens=self._tokenizer.count,
                conversation_id=event.conversation_id,
            )
            if summary is not None:
                published = Envelope.wrap(summary, key=event.conversation_id, actor=envelope.actor, cause=envelope)
                self._summaries.apply(envelope.key, published)
                outputs.append(encode(self._codec, published, topic=SUMMARIES))
        return outputs
