"""The decider's processor: one writer per conversation key turns commands into events and outcomes."""

from collections.abc import Sequence

from commands.decider import ConversationState, Decision, Rejected, decide, evolve
from events.codec import AvroCodec
from events.envelope import Envelope
from events.log import EventLog, OutgoingRecord
from events.outcomes import CommandAccepted, CommandRejected
from events.values import Actor
from events.topics import COMMAND_OUTCOMES, COMMANDS, CONVERSATION_EVENTS, key_of, topic_of
from processors.keyed_state import KeyedStates
from processors.runtime import Delivery, Processor, encode

DECIDER_GROUP = "decider"


class CommandHandler:
    """Decides each command against its conversation's state and emits the events plus a reply."""

    def __init__(self, *, log: EventLog, codec: AvroCodec) -> None:
        self._codec = codec
        # The decider is the only writer of conversation-events, so a miss can load the whole key.
        self._states = KeyedStates(
            log=log, codec=codec, topic=CONVERSATION_EVENTS, initial=ConversationState(), evolve=evolve
        )

    def processor(self) -> Processor:
        return Processor(group=DECIDER_GROUP, topics=(COMMANDS,), react=self.react, on_reset=self._states.clear)

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        outputs: list[OutgoingRecord] = []
        for delivery in deliveries:
            command = delivery.envelope
            state = await self._states.get(command.key)
            decision = decide(command, state)
            for event in decision.events:
                envelope = Envelope.wrap(event, key=key_of(event), actor=_scope_of(state, command), cause=command)
                if topic_of(event) == CONVERSATION_EVENTS:
                    state = self._states.apply(command.key, envelope)
                outputs.append(encode(self._codec, envelope, topic=topic_of(event)))
            outputs.append(self._reply(command, decision))
        return outputs

    def _reply(self, command: Envelope, decision: Decision) -> OutgoingRecord:
        outcome = decision.outcome
        conversation_id = command.payload.conversation_id
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
            )
        envelope = Envelope.wrap(reply, key=command.event_id, actor=command.actor, cause=command)
        return encode(self._codec, envelope, topic=COMMAND_OUTCOMES)


def _scope_of(state: ConversationState, command: Envelope) -> Actor:
    """Events are scoped to the conversation's owner, whoever sent the command (a worker, the watchdog)."""
    if state.exists:
        return state.owner
    return Actor(user_id=command.actor.user_id, org_id=command.actor.org_id, workspace_id=command.payload.workspace_id)
