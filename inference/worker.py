"""The inference worker: claims one pool's inference requests, fairly between tenants, and streams each run's output to the log.

A pool's requests queue on one topic per prompt-size class (or one topic for the pool), and the
worker serves each as a lane of its own: its own consumer group, its own `Admission` (the slots of
that size class, shared between tenants), its own read-ahead of waiting requests. So long prompts
never hold the slots short ones need, and a tenant with many requests waiting cannot take every
slot while another tenant waits: when a slot frees, the tenant holding the fewest goes next.

A claim (`GenerationStarted`) and the consumer commit land together; the commit stops before the
oldest request still waiting (`inference/read_ahead.py`), and a request that an earlier reader may
have claimed is looked up in the log before it is generated, so a request is generated at most
once. The engine is asked while the claim is written (its prefill overlaps the write, a transaction on
Kafka); nothing of the run is appended before the claim has landed. A worker that dies mid-run is
noticed by the watchdog through its lapsed lease, and the run ends as failed with its partial text.
Output is coalesced into `AssistantDelta` events (first token at once) appended without fsync: deltas
are provisional, and only the `FinishRun` command that ends a run is durable. Every run's end carries
its usage, and whether the engine was unavailable (the prompt builder's breakers count those).

With an output safety stage handed in (`inference/output_safety.py`, a port: the classifiers and policies
live in `processors/safety/`), each step's answer is checked in windows as it streams (a `stop` ends the
generation before the delta that completed the window goes out, and the run ends with the policy's
fallback), and the final answer is checked whole before `FinishRun`: what is stored is what passed (as it
was, redacted, or the fallback), and `FinishRun.stream_replaced` tells the decider the deltas were not it.
"""

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from opentelemetry.trace import Span, SpanKind

from commands.catalog import FinishRun
from kernel.sealing import Erased
from kernel.codec import AvroCodec, UndecodableMessage
from events.conversation import RunCancellationRequested
from kernel.envelope import Envelope, new_id, utc_now
from kernel.errors import Unavailable
from kernel.log import ConsumerCommit, EventLog, LogRecord, OutgoingRecord
from events.runs import AssistantDelta, GenerationStarted, InferenceRequested, RunHeartbeat, UsageRecorded
from events.tools import ToolCallsProposed, call_summaries
from events.topics import COMMANDS, CONVERSATION_EVENTS, RUN_EVENTS, USAGE
from events.values import ToolCallSummary, Usage
from inference.coalesce import MAX_DELTA_DELAY_S, MAX_TOKENS_PER_DELTA, coalesce
from inference.engine import EngineUnavailable, GenerationFinished, GenerationRequest, InferenceEngine, TokenText
from inference.output_safety import OutputSafety, OutputVerdict, OutputWatch
from inference.pools import SIZE_CLASSES, PoolConfig, SizeClass, default_pools
from inference.read_ahead import ReadAhead, Waiting
from inference.routing import Admission
from inference.citations import citations_in
from inference.metrics import (
    ADMISSION_WAIT, IN_FLIGHT, INFERENCE_COST, QUEUE_DEPTH, REQUEST_DURATION, SLOTS, TIME_TO_FIRST_TOKEN, TOKEN_USAGE,
)
from kernel import log_context, tracing
from kernel.runtime import dead_letter, encode

logger = logging.getLogger(__name__)
# How long a lane waits before reading again after the log refused a claim (a full disk).
_LOG_RETRY_S = 1.0
# How long a step's end is retried while the log refuses it (a full disk), so the run's stream ends once the log
# takes writes again rather than when its lease lapses (the watchdog's way, the same FinishRun: the decider takes one).
_STEP_END_RETRY_S = 60.0

WORKER_GROUP_PREFIX = "inference-workers."


def worker_group(pool: PoolConfig, size: SizeClass) -> str:
    """The consumer group of one pool's lane: `inference-workers.<pool>[.<size>]`."""
    return f"{WORKER_GROUP_PREFIX}{pool.name}.{size}" if pool.split_by_size else f"{WORKER_GROUP_PREFIX}{pool.name}"


@dataclass(kw_only=True)
class _Lane:
    """One topic of the pool: its consumer group, its slots, its waiting requests."""

    topic: str
    group: str
    admission: Admission
    read_ahead: ReadAhead[Envelope[InferenceRequested]]
    size: SizeClass
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # a request came in or a slot freed
    room: asyncio.Event = field(default_factory=asyncio.Event)  # the read-ahead has room again


class InferenceWorker:
    """Serves one pool: at most `pool.capacity_for(size)` generations in flight per size class, claimed no faster."""

    def __init__(
        self,
        *,
        log: EventLog,
        codec: AvroCodec,
        engine: InferenceEngine,
        pool: PoolConfig | None = None,
        read_ahead: int | None = None,
        heartbeat_s: float = 5.0,
        max_tokens_per_delta: int = MAX_TOKENS_PER_DELTA,
        max_delta_delay_s: float = MAX_DELTA_DELAY_S,
        output_safety: OutputSafety | None = None,
    ) -> None:
        self._log = log
        self._codec = codec
        self._engine = engine
        # Without a pools file: the one interactive pool, as many slots as the engine runs at once.
        self._pool = pool or default_pools(capacity=engine.max_concurrency).pools[0]
        self._read_ahead = read_ahead
        # Names its host and process, so an operator can tell who claimed a run.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id('worker')}"
        self._heartbeat_s = heartbeat_s
        self._max_tokens_per_delta = max_tokens_per_delta
        self._max_delta_delay_s = max_delta_delay_s
        self._output_safety = output_safety
        self._generations: dict[str, asyncio.Task] = {}
        self._cancel_requested: set[str] = set()
        self._started: set[str] = set()  # generation tasks that have begun to run
        self._recently_cancelled = _RecentIds(limit=10_000)
        # A prompt builder on an at-least-once runtime may request a run twice; it is generated once.
        self._recently_claimed = _RecentIds(limit=10_000)
        # The metrics' `model`: the model the pool serves, or the engine's own where it has one fixed model.
        self._model = self._pool.engine_model or engine.name
        self._time_to_first_token = TIME_TO_FIRST_TOKEN.labels(pool=self._pool.name, model=self._model)
        self._tokens = {
            token_type: TOKEN_USAGE.labels(pool=self._pool.name, model=self._model, gen_ai_token_type=token_type)
            for token_type in ("input", "output", "cached")
        }
        self._cost = INFERENCE_COST.labels(pool=self._pool.name, model=self._model)

    def lag_groups(self) -> dict[str, tuple[str, ...]]:
        """The consumer groups this worker reads, with their topics (for the consumer-lag metric)."""
        return {lane.group: (lane.topic,) for lane in self._lanes()}

    def _lanes(self) -> list[_Lane]:
        sizes: tuple[SizeClass, ...] = SIZE_CLASSES if self._pool.split_by_size else ("short",)
        lanes = []
        for size in sizes:
            admission = Admission.for_pool(self._pool, size)
            # Enough waiting requests to choose fairly between tenants, never an unbounded buffer (and,
            # after a restart, at most this many records to look up for an earlier claim).
            limit = self._read_ahead or min(256, max(16, 4 * admission.capacity))
            lanes.append(
                _Lane(
                    topic=self._pool.topic(size), group=worker_group(self._pool, size), admission=admission,
                    read_ahead=ReadAhead(limit=limit), size=size,
                )
            )
        return lanes

    async def run(self) -> None:
        """Claim and generate until cancelled."""
        listener = asyncio.create_task(self._listen_for_cancellations(await self._log.end_offset(CONVERSATION_EVENTS)))
        try:
            await asyncio.gather(*(self._serve(lane) for lane in self._lanes()))
        finally:
            listener.cancel()
            for task in list(self._generations.values()):
                task.cancel()
            await asyncio.gather(listener, *self._generations.values(), return_exceptions=True)

    async def _serve(self, lane: _Lane) -> None:
        while True:
            try:
                return await self._serve_lane(lane)
            except Unavailable as error:
                # The log took none of a claim (its disk is full): read the lane again from its committed position
                # once it may take writes. Waiting requests are read again; generations in flight go on.
                logger.warning("inference lane %s paused: %s; reading it again in %g s", lane.topic, error.detail, _LOG_RETRY_S)
                await asyncio.sleep(_LOG_RETRY_S)
                lane = next(fresh for fresh in self._lanes() if fresh.size == lane.size)

    async def _serve_lane(self, lane: _Lane) -> None:
        SLOTS.labels(pool=self._pool.name, size_class=lane.size).set(lane.admission.capacity)
        stream = self._log.consume(group=lane.group, topics=(lane.topic,), max_batch=64)
        reader = asyncio.create_task(self._read(lane, stream), name=f"read-{lane.topic}")
        reader.add_done_callback(lambda _: lane.changed.set())
        try:
            while True:
                await self._claim_what_fits(lane)
                if reader.done():
                    reader.result()  # a read that failed stops the worker (the stream ending is a bug too)
                    raise RuntimeError(f"the consumer of {lane.topic} stopped")
                await lane.changed.wait()
                lane.changed.clear()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await stream.aclose()

    async def _read(self, lane: _Lane, stream: AsyncIterator[list[LogRecord]]) -> None:
        """Take requests into the read-ahead while it has room (back-pressure: past that, nothing is fetched)."""
        async for batch in stream:
            ends: dict[int, int] | None = None
            for record in batch:
                while lane.read_ahead.full:
                    lane.room.clear()
                    await lane.room.wait()
                written_through = None
                if lane.read_ahead.breaks_at(record):
                    # Only what was written by now can have been read, and claimed, by an earlier reader: on a fresh
                    # start that is a lookup for the requests already queued, not for the next `limit` of each partition.
                    ends = ends or await self._log.end_offsets(lane.topic)
                    written_through = max(ends.get(record.partition, -1), record.offset)
                try:
                    envelope = self._codec.decode(record.value)
                except UndecodableMessage as error:
                    lane.read_ahead.add(record, tenant_id="", payload=None, problem=str(error), written_through=written_through)
                else:
                    if isinstance(envelope.payload, Erased):  # its user was erased while it queued: nothing to answer
                        lane.read_ahead.add(record, tenant_id="", payload=None, problem=f"{envelope.payload.key_id} was erased",
                                            written_through=written_through)
                        lane.changed.set()
                        continue
                    lane.read_ahead.add(record, tenant_id=envelope.actor.org_id, payload=envelope, written_through=written_through)
                lane.changed.set()

    async def _claim_what_fits(self, lane: _Lane) -> None:
        """Claim waiting requests while slots are free: the tenant holding the fewest slots first.

        Everything admitted in one pass is claimed in one append (one transaction on Kafka, where each costs
        round trips to the coordinator): claimed one by one, 16 requests that arrived together waited ~1.5 s
        for the last claim on Tansu."""
        read_ahead = lane.read_ahead
        while True:
            junk = read_ahead.undecodable()
            if junk is not None:
                read_ahead.resolve(junk)
                letter = dead_letter(self._codec, group=lane.group, record=junk.record, reason=junk.problem)
                await self._log.append([letter], commit=self._commit(lane))
                continue
            admitted: list[tuple[str, Waiting[Envelope[InferenceRequested]]]] = []
            depth = QUEUE_DEPTH.labels(pool=self._pool.name, size_class=lane.size)
            while read_ahead.undecodable() is None:
                waiting_tenants = read_ahead.waiting_tenants()
                tenant_id = lane.admission.next_tenant(waiting_tenants)
                if tenant_id is None:
                    break
                waiting = read_ahead.oldest_of(tenant_id)
                assert waiting is not None and lane.admission.try_admit(tenant_id, waiting=waiting_tenants)
                self._count_in_flight(lane)
                read_ahead.resolve(waiting)
                admitted.append((tenant_id, waiting))
            depth.set(len(read_ahead.waiting_tenants()))
            if not admitted:
                if read_ahead.undecodable() is None:
                    return
                continue
            lane.room.set()
            tasks = await self._claim(lane, [waiting for _, waiting in admitted])
            for (tenant_id, _), task in zip(admitted, tasks):
                if task is None:
                    lane.admission.release(tenant_id)
                else:
                    task.add_done_callback(lambda _, tenant_id=tenant_id: self._release(lane, tenant_id))

    def _release(self, lane: _Lane, tenant_id: str) -> None:
        lane.admission.release(tenant_id)
        self._count_in_flight(lane)
        lane.changed.set()

    def _count_in_flight(self, lane: _Lane) -> None:
        IN_FLIGHT.labels(pool=self._pool.name, size_class=lane.size).set(lane.admission.in_flight)

    def _commit(self, lane: _Lane) -> ConsumerCommit | None:
        offsets = lane.read_ahead.commit_offsets()
        return ConsumerCommit(group=lane.group, offsets=offsets) if offsets else None

    async def _claim(
        self, lane: _Lane, admitted: Sequence[Waiting[Envelope[InferenceRequested]]]
    ) -> list[asyncio.Task | None]:
        """Claim the admitted requests in one append with the lane's commit; their generations, None where a request
        needs none (claimed before, or cancelled before it started)."""
        records: list[OutgoingRecord] = []
        claimed: list[Envelope[InferenceRequested] | None] = []
        claim_keys = []
        for waiting in admitted:
            request_envelope = waiting.payload
            assert request_envelope is not None
            request = request_envelope.payload
            claim_key = f"{request.run_id}:{request.step}"
            if claim_key in self._recently_claimed or (
                waiting.check and await self._claimed_before(request.run_id, request.step)
            ):
                self._recently_claimed.add(claim_key)
                claimed.append(None)
                continue
            self._recently_claimed.add(claim_key)
            claim_keys.append(claim_key)
            if request.run_id in self._recently_cancelled:
                records.append(self._finish(request_envelope, "", "cancelled", "cancelled before it started", Usage()))
                claimed.append(None)
                continue
            claim = GenerationStarted(
                run_id=request.run_id, worker_id=self.worker_id, pool=self._pool.name, step=request.step, model=self._model
            )
            records.append(self._event(claim, request_envelope))
            claimed.append(request_envelope)
        commit = self._commit(lane)
        # The generations start before their claims are written, so the engine's prefill overlaps the claim's write (a
        # transaction on Kafka); they append nothing of their runs until `landed` says the claims are in the log.
        landed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        tasks = [self._start(lane, request_envelope, landed) if request_envelope else None for request_envelope in claimed]
        try:
            if records or commit is not None:
                # Not durable, like the deltas after it: a machine crash that takes a claim back takes its request's
                # position too, and the request is claimed again (a later durable append makes it durable anyway).
                await self._log.append(records, durable=False, commit=commit)
        except BaseException as error:
            landed.set_result(False)  # their generations stop now, unreported, the engine's requests aborted
            for task in tasks:
                if task is not None:
                    task.cancel()
            if isinstance(error, Unavailable):
                for claim_key in claim_keys:  # nothing was written
                    self._recently_claimed.discard(claim_key)
            raise
        landed.set_result(True)
        # From the request's routing (the prompt builder wrapped it) to its claim: the queue, whichever reader held it.
        claimed_at = utc_now()
        for request_envelope in claimed:
            if request_envelope is not None:
                self._observe_queue_wait(lane, request_envelope, claimed_at)
        return tasks

    def _observe_queue_wait(self, lane: _Lane, request_envelope: Envelope[InferenceRequested], claimed_at: datetime) -> None:
        waited_s = (claimed_at - request_envelope.occurred_at).total_seconds()
        ADMISSION_WAIT.labels(pool=self._pool.name, size_class=lane.size).observe(max(0.0, waited_s))
        tracing.record(
            "queue wait", cause=request_envelope, start=min(request_envelope.occurred_at, claimed_at), end=claimed_at,
            attributes={"turnlog.pool": self._pool.name, "turnlog.size_class": lane.size, "messaging.destination.name": lane.topic},
        )

    def _start(self, lane: _Lane, request_envelope: Envelope[InferenceRequested], landed: asyncio.Future[bool]) -> asyncio.Task:
        request = request_envelope.payload
        if request.run_id in self._recently_cancelled:
            self._cancel_requested.add(request.run_id)  # the cancel came while the request was being claimed
        task = asyncio.create_task(self._generate(request_envelope, lane.topic, landed), name=f"generate-{request.run_id}")
        self._generations[request.run_id] = task
        task.add_done_callback(lambda _, run_id=request.run_id: self._forget(run_id, task))
        return task

    async def _claimed_before(self, run_id: str, step: int) -> bool:
        """Whether the run's events already hold a claim of this step (by a reader of this topic before this one)."""
        # From the run id's minting time (the log's rule for ids): on Kafka a scan of what was written since, not of
        # the partition's retention.
        for record in await self._log.read(RUN_EVENTS, key=run_id):
            try:
                event = self._codec.decode(record.value).payload
                if isinstance(event, GenerationStarted) and event.step == step:
                    return True
            except UndecodableMessage:
                continue
        return False

    def _forget(self, run_id: str, task: asyncio.Task) -> None:
        if self._generations.get(run_id) is not task:
            return  # a later claim of the same run (after the log refused this one's) is another generation's
        del self._generations[run_id]
        self._cancel_requested.discard(run_id)
        self._started.discard(run_id)

    async def _generate(self, request_envelope: Envelope[InferenceRequested], topic: str, landed: asyncio.Future[bool]) -> None:
        # The generation's span (OpenTelemetry's GenAI conventions: `chat <model>`), current while it runs, so what it
        # appends (deltas, the step's end, its usage) and its output checks are its children; the first token is an
        # event on it.
        request = request_envelope.payload
        attributes = {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": self._model, "turnlog.pool": self._pool.name,
            "turnlog.run_id": request.run_id, "turnlog.step": request.step,
        }
        with tracing.span(f"chat {self._model}", cause=request_envelope, kind=SpanKind.CLIENT, attributes=attributes) as span:
            await self._generate_in(span, request_envelope, topic, landed)

    async def _generate_in(
        self, span: Span, request_envelope: Envelope[InferenceRequested], topic: str, landed: asyncio.Future[bool]
    ) -> None:
        request = request_envelope.payload
        # From here to the first await below, nothing suspends: a cancel can only reach this task
        # inside the `try` that turns it into a reported run (one that reached a task not yet
        # started would be raised before any line of it ran, and the run would never be reported).
        self._started.add(request.run_id)
        log_context.bind(**log_context.envelope_fields(request_envelope))  # this task's log lines name its run
        started = time.perf_counter()
        first_token_at: float | None = None
        finished: list[GenerationFinished] = []
        parts: list[str] = []
        status, reason = "completed", ""
        engine_unavailable = False
        watch = self._output_safety.watch(request, actor=request_envelope.actor) if self._output_safety is not None else None
        stopped: OutputVerdict | None = None  # a window the output stage stopped the run at

        async def texts() -> AsyncIterator[str]:
            generation = self._engine.generate(
                GenerationRequest(
                    request_id=request.run_id,
                    messages=request.messages,
                    max_output_tokens=request.max_output_tokens,
                    tools=request.tools,
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
        heartbeat = asyncio.create_task(self._beat(request_envelope, landed))
        try:
            if request.run_id in self._cancel_requested:
                raise asyncio.CancelledError  # cancelled before it started
            async for text in deltas:
                if not await _claimed(landed):
                    break  # the log took no claim: nothing of this run is appended (below, nor its end)
                if watch is not None:
                    verdict = await watch.delta(text)
                    if verdict is not None and verdict.stops:
                        stopped = verdict  # this delta never goes out; the generation is closed below
                        break
                    if verdict is not None and verdict.decision is not None:
                        await self._log.append([self._event(verdict.decision, request_envelope)], durable=False)
                delta = AssistantDelta(run_id=request.run_id, index=len(parts), text=text)
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                    self._time_to_first_token.observe(first_token_at - started)
                    span.add_event("first_token")
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
            engine_unavailable = isinstance(error, EngineUnavailable)
        heartbeat.cancel()

        async def conclude() -> None:
            await deltas.aclose()
            if not await _claimed(landed):
                return  # the claim's append failed: a refused claim is claimed again when read again
            output_tokens = finished[0].output_tokens if finished else len(parts)
            usage = Usage(
                prompt_tokens=finished[0].prompt_tokens if finished else 0,
                cached_tokens=finished[0].cached_tokens if finished else 0,
                output_tokens=output_tokens,
            )
            step_usage = usage
            if request.step > 1:  # a run's usage is its steps' together: the ledger keeps one row per run
                usage = _added(usage, await self._usage_before(request.run_id))
            recorded = UsageRecorded(
                run_id=request.run_id, conversation_id=request.conversation_id, pool=self._pool.name,
                engine=self._engine.name, status=status, prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
                output_tokens=usage.output_tokens, recorded_at=utc_now(), engine_unavailable=engine_unavailable,
            )
            proposed = finished[0].tool_calls if finished and status == "completed" and stopped is None else ()
            checked: list[OutgoingRecord] = []
            if proposed:
                # The step asks for tools: the run goes on in the tool loop, and this slot is free for another.
                step_end = self._event(ToolCallsProposed(
                    run_id=request.run_id, conversation_id=request.conversation_id, step=request.step,
                    text="".join(parts), calls=proposed, proposed_at=utc_now(), topic=topic,
                    offered=tuple(spec.name for spec in request.tools),
                ), request_envelope)
                recorded = replace(recorded, status="tool_calls")
            else:
                calls = await self._calls_made(request.run_id) if request.step > 1 else ()
                text, final_status, final_reason, replaced, decisions = await self._checked_answer(
                    watch, stopped, "".join(parts), status, reason
                )
                checked = [self._event(decision, request_envelope) for decision in decisions]
                step_end = self._finish(request_envelope, text, final_status, final_reason, usage, calls, replaced)
            # One append: the step's end and what it cost land together (the ledger never misses a step).
            await self._append_step_end([
                *checked,
                step_end,
                encode(
                    self._codec, Envelope.wrap(recorded, key=request.run_id, actor=request_envelope.actor, cause=request_envelope),
                    topic=USAGE,
                ),
            ])
            self._observe_step(step_usage, outcome=recorded.status, duration_s=time.perf_counter() - started)
            if span.is_recording():
                span.set_attributes({
                    "gen_ai.usage.input_tokens": step_usage.prompt_tokens, "gen_ai.usage.output_tokens": step_usage.output_tokens,
                    "turnlog.outcome": recorded.status,
                })
                if status == "failed":
                    tracing.failed(span, reason)

        # Shielded: a cancel that lands after the text is done (the owner's, a heartbeat away from the
        # end) must not stop the run from being reported; the decider still marks it cancelled.
        await asyncio.shield(conclude())

    async def _append_step_end(self, records: list[OutgoingRecord]) -> None:
        """Append a step's end, retried while the log refuses it for up to `_STEP_END_RETRY_S`."""
        deadline = time.monotonic() + _STEP_END_RETRY_S
        pause = 0.1
        while True:
            try:
                await self._log.append(records)
                return
            except Unavailable as error:
                if time.monotonic() + pause > deadline:
                    raise
                logger.warning("the end of a step waits for the log: %s; retrying in %g s", error.detail, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _observe_step(self, usage: Usage, *, outcome: str, duration_s: float) -> None:
        REQUEST_DURATION.labels(pool=self._pool.name, model=self._model, outcome=outcome).observe(duration_s)
        self._tokens["input"].observe(usage.prompt_tokens)
        self._tokens["output"].observe(usage.output_tokens)
        if usage.cached_tokens:
            self._tokens["cached"].observe(usage.cached_tokens)
        self._cost.inc((usage.prompt_tokens + usage.output_tokens) * self._pool.cost_per_1k_tokens / 1000)

    async def _checked_answer(
        self, watch: OutputWatch | None, stopped: OutputVerdict | None, text: str, status: str, reason: str
    ) -> tuple[str, str, str, bool, list[object]]:
        """What the run stores after the output stage: (text, status, reason, whether it replaces the stream, decisions).

        A run stopped mid-stream stores the policy's fallback; otherwise the whole answer (a partial one too, when
        the run was cancelled or failed) is checked before it is stored. A check that raises holds the answer back.
        """
        if stopped is not None:
            decisions = [stopped.decision] if stopped.decision is not None else []
            return stopped.text, status, stopped.reason, True, decisions
        if watch is None or not text.strip():
            return text, status, reason, False, []
        try:
            verdict = await watch.answer(text)
        except Exception:
            logger.exception("the output safety check of a run failed")
            return "", "failed", "the output safety check could not run, so the answer was held back", True, []
        decisions = [verdict.decision] if verdict.decision is not None else []
        if not verdict.changes_text:
            return text, status, reason, False, decisions
        user_facing = verdict.action == "replace" and status == "completed"
        return verdict.text, status, verdict.reason if user_facing else reason, True, decisions

    async def _calls_made(self, run_id: str) -> tuple[ToolCallSummary, ...]:
        """The tool calls of the run's earlier steps, for its assistant turn to list."""
        events = []
        for record in await self._log.read(RUN_EVENTS, key=run_id):
            try:
                events.append(self._codec.decode(record.value).payload)
            except UndecodableMessage:
                continue
        return call_summaries(events)

    async def _usage_before(self, run_id: str) -> Usage:
        """What the run's earlier model steps used: each step's record holds the run's total so far."""
        for record in reversed(await self._log.read(USAGE, key=run_id)):
            try:
                event = self._codec.decode(record.value).payload
            except UndecodableMessage:
                continue
            if isinstance(event, UsageRecorded):
                return Usage(
                    prompt_tokens=event.prompt_tokens, cached_tokens=event.cached_tokens, output_tokens=event.output_tokens
                )
        return Usage()

    async def _beat(self, request_envelope: Envelope[InferenceRequested], landed: asyncio.Future[bool]) -> None:
        """Renew the run's lease while it lives, even when no text flows (a long prefill, a slow tool)."""
        beat = RunHeartbeat(run_id=request_envelope.payload.run_id, worker_id=self.worker_id)
        while True:
            await asyncio.sleep(self._heartbeat_s)
            if not await _claimed(landed):
                return
            await self._log.append([self._event(beat, request_envelope)], durable=False)

    async def _listen_for_cancellations(self, after: int) -> None:
        async for record in self._log.follow(CONVERSATION_EVENTS, after=after):
            event_type = self._codec.envelope_type(record.value)
            if event_type is not None and event_type != RunCancellationRequested.__name__:
                continue  # told from the header: the conversation's other events are not decoded (nor decrypted)
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

    def _finish(
        self, cause: Envelope[InferenceRequested], text: str, status: str, reason: str, usage: Usage,
        tool_calls: tuple[ToolCallSummary, ...] = (), stream_replaced: bool = False,
    ) -> OutgoingRecord:
        request = cause.payload
        command = FinishRun(
            conversation_id=request.conversation_id, run_id=request.run_id, status=status, text=text, reason=reason,
            usage=usage, sources=request.sources, citations=citations_in(text, request.sources), tool_calls=tool_calls,
            stream_replaced=stream_replaced,
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

    def discard(self, item: str) -> None:
        self._ids.pop(item, None)


async def _claimed(landed: asyncio.Future[bool]) -> bool:
    """Whether the run's claim is in the log, once its append has ended (shielded: `landed` is shared by a batch)."""
    if not landed.done():
        await asyncio.shield(landed)
    return landed.result()


def _added(usage: Usage, earlier: Usage) -> Usage:
    return Usage(
        prompt_tokens=usage.prompt_tokens + earlier.prompt_tokens,
        cached_tokens=usage.cached_tokens + earlier.cached_tokens,
        output_tokens=usage.output_tokens + earlier.output_tokens,
    )
