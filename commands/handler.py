"""The decider's processor: one writer per conversation key turns commands into events and outcomes."""

from collections.abc import Sequence
from dataclasses import dataclass

from commands.decider import ConversationState, Decision, Rejected, decide, evolve
from kernel.codec import AvroCodec
from kernel.envelope import Envelope
from kernel.log import EventLog, LogRecord, OutgoingRecord
from events.outcomes import CommandAccepted, CommandRejected
from kernel.envelope import Actor
from events.topics import COMMAND_OUTCOMES, COMMANDS, CONVERSATION_EVENTS, RUN_EVENTS, key_of, topic_of
from kernel.keyed_state import DEFAULT_CAPACITY, KeyedStates
from kernel.runtime import Delivery, Processor, encode
from kernel.sealing import Erased
from kernel.snapshots import SnapshotSource

DECIDER_GROUP = "decider"
# The conversations' states a decider keeps, in estimated bytes together (besides `capacity` conversations): a
# state keeps every run of its conversation, so a key count alone let a few long conversations fill the memory.
STATE_CACHE_BYTES = 16_000_000
# What each kept entry costs, measured with tracemalloc on folded states (tests/commands/test_handler_memory.py).
_BYTES_PER_STATE, _BYTES_PER_ENTRY = 3_000, 350


def state_weight(state: ConversationState) -> int:
    """A conversation's state in estimated bytes: its runs, idempotency keys and recently decided commands."""
    return _BYTES_PER_STATE + _BYTES_PER_ENTRY * (len(state.runs) + len(state.idempotency) + len(state.decided))


@dataclass(frozen=True, kw_only=True)
class _PendingReply:
    command: Envelope
    decision: Decision
    records: tuple[OutgoingRecord, ...]


class CommandHandler:
    """Decides each command against its conversation's state, appends the events, then replies.

    The reply follows the events in the same append (one transaction on Kafka) and names the offsets they
    landed at, so the API can wait until readers see them before it answers: read-your-writes on any
    instance, even where a log makes a transaction visible one partition at a time (Kafka).
    """

    def __init__(
        self, *, log: EventLog, codec: AvroCodec, capacity: int = DEFAULT_CAPACITY,
        snapshots: SnapshotSource[ConversationState] | None = None,
    ) -> None:
        self._codec = codec
        # The decider is the only writer of conversation-events, so a miss can load the whole key: from its snapshot
        # on, where there are snapshots (commands/snapshots.py).
        self._states = KeyedStates(
            log=log, codec=codec, topic=CONVERSATION_EVENTS, initial=ConversationState(), evolve=evolve,
            capacity=capacity, weigh=state_weight, budget=STATE_CACHE_BYTES, snapshots=snapshots,
        )
        self._pending: list[_PendingReply] = []

    def processor(self) -> Processor:
        return Processor(
            group=DECIDER_GROUP, topics=(COMMANDS,), react=self.react, on_reset=self._reset, then=self.replies,
            on_committed=self._replied, sees_erased=True,  # its sender waits for a reply
        )

    def _reset(self) -> None:
        self._states.clear()
        self._pending.clear()

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        outputs: list[OutgoingRecord] = []
        for delivery in deliveries:
            command = delivery.envelope
            if isinstance(command.payload, Erased):
                # Sent as its user was erased, so sealed under a key no one keeps: nothing to decide, but an answer.
                refused = Rejected(code="erased", detail=f"the data of {command.payload.key_id} was erased")
                self._pending.append(_PendingReply(command=command, decision=Decision(outcome=refused), records=()))
                continue
            state = await self._states.get(command.key)
            decision = decide(command, state)
            records = []
            for event in decision.events:
                envelope = Envelope.wrap(event, key=key_of(event), actor=_scope_of(state, command), cause=command)
                if topic_of(event) == CONVERSATION_EVENTS:
                    state = self._states.apply(command.key, envelope)
                records.append(encode(self._codec, envelope, topic=topic_of(event)))
            self._pending.append(_PendingReply(command=command, decision=decision, records=tuple(records)))
            outputs.extend(records)
        return outputs

    def replies(self, written: Sequence[LogRecord]) -> list[OutgoingRecord]:
        """One reply per command decided in the batch being written, with where its events landed.

        Called by the log's writer within the append (again if the write is retried): it only reads."""
        landed = {record.value: record for record in written}
        decided = tuple(self._pending)  # one atomic copy: the event loop's thread may reset the list meanwhile
        return [self._reply(pending, [landed[record.value] for record in pending.records]) for pending in decided]

    def _replied(self, _batch: Sequence[LogRecord]) -> None:
        self._pending.clear()

    def _reply(self, pending: _PendingReply, events: list[LogRecord]) -> OutgoingRecord:
        command, outcome = pending.command, pending.decision.outcome
        # An erased command's payload no longer opens; commands are keyed by their conversation.
        conversation_id = command.key if isinstance(command.payload, Erased) else command.payload.conversation_id
        if isinstance(outcome, Rejected):
            reply: object = CommandRejected(
                command_id=command.event_id, conversation_id=conversation_id, code=outcome.code, detail=outcome.detail
            )
        else:
            reply = CommandAccepted(
                command_id=command.event_id,
                conversation_id=conversation_id,
                run_id=outcome.run_id,
                turn_seq=outcome.turn_seq,
                created_at=command.occurred_at,
                conversation_offset=_last_offset(events, CONVERSATION_EVENTS),
                run_offset=_last_offset(events, RUN_EVENTS),
            )
        envelope = Envelope.wrap(reply, key=command.event_id, actor=command.actor, cause=command)
        return encode(self._codec, envelope, topic=COMMAND_OUTCOMES)


def _last_offset(records: Sequence[LogRecord], topic: str) -> int | None:
    return max((record.offset for record in records if record.topic == topic), default=None)


def _scope_of(state: ConversationState, command: Envelope) -> Actor:
    """Events are scoped to the conversation's owner, whoever sent the command (a worker, the watchdog)."""
    if state.exists:
        return state.owner
    return Actor(user_id=command.actor.user_id, org_id=command.actor.org_id, workspace_id=command.payload.workspace_id)
