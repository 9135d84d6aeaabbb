"""The inference worker: claims inference requests of one pool and streams each run's output to the log.

A claim (`GenerationStarted`) and the consumer commit that covers the request land together, so a
request is generated at most once; a worker that dies mid-run is noticed by the watchdog through its
lapsed lease, and the run ends as failed with its partial text. Output is coalesced into
`AssistantDelta` events (first token at once) appended without fsync: deltas are provisional, and
only the `FinishRun` command that ends a run is durable.
"""

import asyncio
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator

from commands.catalog import FinishRun
from events.codec import AvroCodec, UndecodableMessage
from events.conversation import RunCancellationRequested
from events.envelope import Envelope, new_id, utc_now
from events.log import ConsumerCommit, EventLog, LogRecord, OutgoingRecord
from events.runs import AssistantDelta, GenerationStarted, InferenceRequested, RunHeartbeat, UsageRecorded
from events.topics import COMMANDS, CONVERSATION_EVENTS, RUN_EVENTS, USAGE, inference_topic
from events.values import Usage
from inference.coalesce import coalesce
from inference.engine import GenerationFinished, GenerationRequest, InferenceEngine, TokenText
from processors.grounding import citations_in
from processors.runtime import dead_letter, encode

logger = logging.getLogger(__name__)


class InferenceWorker:
    """Runs up to `engine.max_concurrency` generations at once and claims no more than that."""

    def __init__(
        self,
        *,
        log: EventLog,
        codec: AvroCodec,
        engine: InferenceEngine,
        pool: str = "interactive",
        heartbeat_s: float = 5.0,
        max_tokens_per_delta: int = 8,
        max_delta_delay_s: float = 0.03,
    ) -> None:
        self._log = log
        self._codec = codec
        self._engine = engine
        self._pool = pool
        self._group = f"inference-workers.{pool}"
        # Names its host and process, so an operator can tell who claimed a run.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id('worker')}"
        self._heartbeat_s = heartbeat_s
        self._max_tokens_per_delta = max_tokens_per_delta
        self._max_delta_delay_s = max_delta_delay_s
        self._generations: dict[str, asyncio.Task] = {}
        self._cancel_requested: set[str] = set()
        self._started: set[str] = set()  # generation tasks that have begun to run
        self._recently_cancelled = _RecentIds(limit=10_000)
        # A prompt builder on an at-least-once runtime may request a run twice; it is generated once.
        self._recently_claimed = _RecentIds(limit=10_000)

    async def run(self) -> None:
        """Claim and generate until cancelled."""
        listener = asyncio.create_task(self._listen_for_cancellations(await self._log.end_offset(CONVERSATION_EVENTS)))
        slots = asyncio.Semaphore(self._engine.max_concurrency)
        stream = self._log.consume(group=self._group, topics=(inference_topic(self._pool),), max_batch=64)
        try:
            async for batch in stream:
                for record in batch:
                    await slots.acquire()  # back-pressure: an idle slot before a claim
                    task = await self._claim(record)
                    if task is None:
                        slots.release()
                    else:
                        task.add_done_callback(lambda _, release=slots.release: release())
        finally:
            listener.cancel()
            for task in list(self._generations.values()):
                task.cancel()
            await asyncio.gather(listener, *self._generations.values(), return_exceptions=True)
            await stream.aclose()

    async def _claim(self, record: LogRecord) -> asyncio.Task | None:
        commit = ConsumerCommit.through(self._group, [record])
        try:
            request_envelope: Envelope[InferenceRequested] = self._codec.decode(record.value)
        except UndecodableMessage as error:
            letter = dead_letter(self._codec, group=self._group, record=record, reason=str(error))
            await self._log.append([letter], commit=commit)
            return None
        request = request_envelope.payload
        if request.run_id in self._recently_claimed:
            await self._log.append([], commit=commit)
            return None
        self._recently_claimed.add(request.run_id)
        if request.run_id in self._recently_cancelled:
            await self._log.append([self._finish(request_envelope, "", "cancelled", "cancelled before it started", Usage())], commit=commit)
            return None
        claim = GenerationStarted(run_id=request.run_id, worker_id=self.worker_id, pool=self._pool)
        await self._log.append([self._event(claim, request_envelope)], commit=commit)
        task = asyncio.create_task(self._generate(request_envelope), name=f"generate-{request.run_id}")
        self._generations[request.run_id] = task
        task.add_done_callback(lambda _, run_id=request.run_id: self._forget(run_id))
        return task

    def _forget(self, run_id: str) -> None:
        self._generations.pop(run_id, None)
        self._cancel_requested.discard(run_id)
        self._started.discard(run_id)

    async def _generate(self, request_envelope: Envelope[InferenceRequested]) -> None:
        request = request_envelope.payload
        # From here to the first await below, nothing suspends: a cancel can only reach this task
        # inside the `try` that turns it into a reported run (one that reached a task not yet
        # started would be raised before any line of it ran, and the run would never be reported).
        self._started.add(request.run_id)
        finished: list[GenerationFinished] = []
        parts: list[str] = []
        status, reason = "completed", ""

        async def texts() -> AsyncIterator[str]:
            generation = self._engine.generate(
                GenerationRequest(
                    request_id=request.run_id,
                    messages=request.messages,
                    max_output_tokens=request.max_output_tokens,
                )
            )
            try:
                async for event in generation:
                    if isinstance(event, TokenText):
                        yield event.text
                    else:
                        finished.append(event)
            finally:
                await generation.aclose()

        deltas = coalesce(texts(), max_tokens=self._max_tokens_per_delta, max_delay_s=self._max_delta_delay_s)
        heartbeat = asyncio.create_task(self._beat(request_envelope))
        try:
            if request.run_id in self._cancel_requested:
                raise asyncio.CancelledError  # cancelled between its claim and its start
            async for text in deltas:
                delta = AssistantDelta(run_id=request.run_id, index=len(parts), text=text)
                parts.append(text)
                await self._log.append([self._event(delta, request_envelope)], durable=False)
        except asyncio.CancelledError:
            # The owner's cancel, or this worker shutting down: either way the run ends now, with its
            # partial text (after a crash instead, the watchdog ends it once its lease lapses).
            if request.run_id in self._cancel_requested:
                status, reason = "cancelled", "cancelled by the user"
            else:
                status, reason = "failed", "interrupted: the inference worker shut down"
        except Exception as error:
            logger.exception("generation of %s failed", request.run_id)
            status, reason = "failed", f"inference failed: {type(error).__name__}: {error}"
        heartbeat.cancel()

        async def conclude() -> None:
            await deltas.aclose()
            output_tokens = finished[0].output_tokens if finished else len(parts)
            usage = Usage(
                prompt_tokens=finished[0].prompt_tokens if finished else 0,
                cached_tokens=finished[0].cached_tokens if finished else 0,
                output_tokens=output_tokens,
            )
            recorded = UsageRecorded(
                run_id=request.run_id, conversation_id=request.conversation_id, pool=self._pool, engine=self._engine.name,
                status=status, prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
                output_tokens=usage.output_tokens, recorded_at=utc_now(),
            )
            # One append: the run's end and what it cost land together (the ledger never misses a finished run).
            await self._log.append([
                self._finish(request_envelope, "".join(parts), status, reason, usage),
                encode(self._codec, Envelope.wrap(recorded, key=request.run_id, actor=request_envelope.actor), topic=USAGE),
            ])

        # Shielded: a cancel that lands after the text is done (the owner's, a heartbeat away from the
        # end) must not stop the run from being reported; the decider still marks it cancelled.
        await asyncio.shield(conclude())

    async def _beat(self, request_envelope: Envelope[InferenceRequested]) -> None:
        """Renew the run's lease while it lives, even when no text flows (a long prefill, a slow tool)."""
        beat = RunHeartbeat(run_id=request_envelope.payload.run_id, worker_id=self.worker_id)
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await self._log.append([self._event(beat, request_envelope)], durable=False)

    async def _listen_for_cancellations(self, after: int) -> None:
        async for record in self._log.follow(CONVERSATION_EVENTS, after=after):
            try:
                event = self._codec.decode(record.value).payload
            except UndecodableMessage:
                continue  # the decider's own processor dead-letters it
            if not isinstance(event, RunCancellationRequested):
                continue
            self._recently_cancelled.add(event.run_id)
            task = self._generations.get(event.run_id)
            if task is not None:
                self._cancel_requested.add(event.run_id)
                if event.run_id in self._started:
                    task.cancel()  # else it sees the request as it starts

    def _event(self, event: object, cause: Envelope) -> OutgoingRecord:
        return encode(self._codec, Envelope.wrap(event, key=event.run_id, actor=cause.actor, cause=cause), topic=RUN_EVENTS)

    def _finish(self, cause: Envelope[InferenceRequested], text: str, status: str, reason: str, usage: Usage) -> OutgoingRecord:
        request = cause.payload
        command = FinishRun(
            conversation_id=request.conversation_id, run_id=request.run_id, status=status, text=text, reason=reason,
            usage=usage, sources=request.sources, citations=citations_in(text, request.sources),
        )
        return encode(self._codec, Envelope.wrap(command, key=request.conversation_id, actor=cause.actor, cause=cause), topic=COMMANDS)


class _RecentIds:
    """The last `limit` ids seen, for constant-time membership."""

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, item: str) -> None:
        self._ids[item] = None
        self._ids.move_to_end(item)
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def __contains__(self, item: object) -> bool:
        return item in self._ids
