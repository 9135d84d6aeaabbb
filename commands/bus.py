"""The command bus: append a command to the log, then wait for the decider's reply to it.

A command is acknowledged only once the decider has appended its events (durably) and its reply;
the reply tells the caller the run id and turn sequence number it was given.
"""

import asyncio
import logging
import time
from dataclasses import replace

from opentelemetry.trace import SpanKind

from commands.catalog import Command
from kernel.codec import AvroCodec, UndecodableMessage
from kernel import tracing
from kernel.envelope import Envelope
from kernel.log import EventLog, OutgoingRecord
from events.outcomes import CommandAccepted, CommandRejected
from events.topics import COMMAND_OUTCOMES, COMMANDS, CONVERSATION_EVENTS, RUN_EVENTS
from kernel.envelope import Actor
from kernel.errors import Conflict, Forbidden, IdempotencyKeyReused, InvalidRequest, NotFound, TurnlogError, Unavailable

logger = logging.getLogger(__name__)


class CommandBus:
    """Sends commands and resolves each one with the decider's reply, read from `command-outcomes`."""

    def __init__(self, *, log: EventLog, codec: AvroCodec, reply_timeout_s: float = 10.0) -> None:
        self._log = log
        self._codec = codec
        self._reply_timeout_s = reply_timeout_s
        self._waiting: dict[str, asyncio.Future[CommandAccepted | CommandRejected]] = {}
        self._listener: asyncio.Task | None = None

    async def start(self) -> None:
        start_after = await self._log.end_offset(COMMAND_OUTCOMES)
        self._listener = asyncio.create_task(self._listen(start_after), name="command-bus-replies")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None

    async def send(self, command: Command, *, actor: Actor, trace_parent: str | None = None) -> CommandAccepted:
        """Append `command` and return the decider's acceptance; a rejection raises the matching error.

        The command's span (a child of the span in hand: the request's) lasts until the reply is readable, and the
        command carries it (or `trace_parent`, when given) to the decider.
        """
        name = type(command).__name__
        with tracing.span(f"command {name}", kind=SpanKind.PRODUCER, attributes={"turnlog.command": name}):
            return await self._send(command, actor=actor, trace_parent=trace_parent)

    async def _send(self, command: Command, *, actor: Actor, trace_parent: str | None) -> CommandAccepted:
        envelope = Envelope.wrap(command, key=command.conversation_id, actor=actor)
        if trace_parent is not None:
            envelope = replace(envelope, trace_parent=trace_parent)
        reply = asyncio.get_running_loop().create_future()
        self._waiting[envelope.event_id] = reply
        try:
            # Not fsynced on its own: the reply comes only after the decider's durable append, which is written after
            # the command and so makes it durable too (the embedded log's WAL keeps prefix order; Kafka is acks=all).
            # A command lost to a power cut was never answered; the client retries with its Idempotency-Key.
            record = OutgoingRecord(topic=COMMANDS, key=envelope.key, value=self._codec.encode(envelope))
            await self._log.append([record], durable=False)
            async with asyncio.timeout(self._reply_timeout_s):
                outcome = await reply
        except TimeoutError:
            raise Unavailable(
                detail="the command is on the log but was not decided in time; retry with the same Idempotency-Key",
                retry_after_s=1,
            ) from None
        finally:
            self._waiting.pop(envelope.event_id, None)
        if isinstance(outcome, CommandRejected):
            raise rejection_error(outcome, command)
        await self._until_readable(outcome)
        return outcome

    async def _until_readable(self, accepted: CommandAccepted) -> None:
        """Wait until readers of the command's partitions see its events (at once on one machine)."""
        landed = [(CONVERSATION_EVENTS, accepted.conversation_id, accepted.conversation_offset)]
        if accepted.run_id is not None:
            landed.append((RUN_EVENTS, accepted.run_id, accepted.run_offset))
        deadline = time.monotonic() + self._reply_timeout_s
        for topic, key, offset in landed:
            while offset is not None and not await self._log.readable(topic, key=key, offset=offset):
                if time.monotonic() > deadline:
                    raise Unavailable(detail="the command was accepted but is not readable yet; retry shortly", retry_after_s=1)
                await asyncio.sleep(0.002)

    async def _listen(self, after: int) -> None:
        async for record in self._log.follow(COMMAND_OUTCOMES, after=after):
            waiter = self._waiting.get(record.key)
            if waiter is None or waiter.done():
                continue  # another API instance's command
            try:
                waiter.set_result(self._codec.decode(record.value).payload)
            except UndecodableMessage as error:
                logger.error("undecodable command outcome at %d: %s", record.offset, error)


def rejection_error(rejected: CommandRejected, command: Command) -> TurnlogError:
    """The error a client sees for a command the decider rejected."""
    match rejected.code:
        case "not_found":
            return NotFound(detail=rejected.detail)
        case "conflict":
            return Conflict(detail=rejected.detail)
        case "erased":
            return Forbidden(detail=rejected.detail)
        case "idempotency_key_reused":
            key = getattr(command, "idempotency_key", None) or ""
            return IdempotencyKeyReused(detail=rejected.detail, idempotency_key=key)
        case _:
            return InvalidRequest(detail=rejected.detail)
