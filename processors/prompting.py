"""The prompt builder: when a run is requested, assemble its prompt from the conversation's history.

The transcript is state folded from `conversation-events`; the prompt is the stable system prefix
first (so engines can reuse its cache), then the turns on the branch being answered, newest last,
within a character budget (token-exact budgets and rolling summaries come with the router).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from events.codec import AvroCodec
from events.conversation import AssistantTurnFinished, RunRequested, TurnSubmitted
from events.envelope import Envelope
from events.log import EventLog, OutgoingRecord
from events.runs import InferenceRequested
from events.topics import CONVERSATION_EVENTS, topic_of
from events.values import ChatMessage, text_of
from processors.keyed_state import KeyedStates
from processors.runtime import Delivery, Processor, encode

PROMPTING_GROUP = "prompt-builder"
SYSTEM_PROMPT = "You are turnlog, a helpful assistant. Answer clearly and concisely."


@dataclass(frozen=True, kw_only=True)
class TranscriptTurn:
    role: str
    text: str
    parent_turn_seq: int | None


@dataclass(frozen=True, kw_only=True)
class Transcript:
    turns: Mapping[int, TranscriptTurn] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, kw_only=True)
class PromptPolicy:
    pool: str = "interactive"
    max_output_tokens: int = 512
    max_history_chars: int = 6_000
    system_prompt: str = SYSTEM_PROMPT


def evolve_transcript(transcript: Transcript, envelope: Envelope) -> Transcript:
    event = envelope.payload
    match event:
        case TurnSubmitted():
            turn = TranscriptTurn(role="user", text=text_of(event.content), parent_turn_seq=event.parent_turn_seq)
        case AssistantTurnFinished():
            # A failed answer stays in the chain of parents but says nothing to the model.
            text = "" if event.state == "failed" else text_of(event.content)
            turn = TranscriptTurn(role="assistant", text=text, parent_turn_seq=event.parent_turn_seq)
        case _:
            return transcript
    return replace(transcript, turns={**transcript.turns, event.turn_seq: turn})


def build_prompt(transcript: Transcript, run: RunRequested, policy: PromptPolicy) -> InferenceRequested:
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
    return InferenceRequested(
        run_id=run.run_id,
        conversation_id=run.conversation_id,
        turn_seq=run.turn_seq,
        pool=policy.pool,
        messages=tuple(messages),
        max_output_tokens=policy.max_output_tokens,
    )


class PromptBuilder:
    """Reacts to `RunRequested` with an `InferenceRequested` on the pool's topic."""

    def __init__(self, *, log: EventLog, codec: AvroCodec, policy: PromptPolicy) -> None:
        self._codec = codec
        self._policy = policy
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
                request = build_prompt(transcript, envelope.payload, self._policy)
                out = Envelope.wrap(request, key=request.run_id, actor=envelope.actor, cause=envelope)
                outputs.append(encode(self._codec, out, topic=topic_of(request)))
            self._transcripts.apply(envelope.key, envelope)
        return outputs
