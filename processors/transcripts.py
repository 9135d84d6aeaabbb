"""A conversation's transcript: its user turns and finished answers by turn number, folded from its events.

What the prompt builder and the summarizer read a conversation's history from (processors/prompting.py,
processors/summarizer.py). Each turn comes from one event (a user turn from `TurnSubmitted`, an answer from
`AssistantTurnFinished`), so the transcript as of any record is the turns whose events came before it
(processors/transcript_turns.py keeps them so, on Kafka).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from events.conversation import AssistantTurnFinished, ConversationCreated, TurnSubmitted
from events.values import text_of
from kernel.envelope import Envelope
from kernel.keyed_state import KeyedStates
from kernel.runtime import Delivery


@dataclass(frozen=True, kw_only=True)
class TranscriptTurn:
    role: str
    text: str
    parent_turn_seq: int | None
    attachments: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Transcript:
    turns: Mapping[int, TranscriptTurn] = field(default_factory=lambda: MappingProxyType({}))


# The transcripts a prompt builder or summarizer keeps, in characters of their turns' text together (about as
# many bytes, for text that is mostly ASCII, plus their objects): a cache miss folds one from the log again.
TRANSCRIPT_CACHE_CHARACTERS = 16_000_000


def transcript_weight(transcript: Transcript) -> int:
    """What a transcript costs to keep: its turns' characters, and a little for each turn's objects."""
    return sum(len(turn.text) + 200 for turn in transcript.turns.values())


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


def branch_of(transcript: Transcript, turn_seq: int | None) -> list[tuple[int, TranscriptTurn]]:
    """The turns from the first one to `turn_seq` along its chain of parents, oldest first."""
    branch: list[tuple[int, TranscriptTurn]] = []
    seq = turn_seq
    while seq is not None and seq in transcript.turns:
        branch.append((seq, transcript.turns[seq]))
        seq = transcript.turns[seq].parent_turn_seq
    branch.reverse()
    return branch


async def transcript_before(transcripts: KeyedStates[Transcript], delivery: Delivery) -> Transcript:
    """The conversation's transcript as of just before the delivered event, from the cache or loaded.

    Before a conversation's first event there is nothing to load: a new conversation costs no read of the log (on
    Kafka a scan of the minutes before its id was minted) nor of the store.
    """
    key = delivery.envelope.key
    if isinstance(delivery.envelope.payload, ConversationCreated) and key not in transcripts:
        transcripts.put(key, Transcript())
    return await transcripts.get(key, before=delivery.record.offset)
