"""The tool runner: executes the calls the loop requests, each within its timeout, and reports how each ended.

A requested call is taken at once (its request committed) and run on a task of its own, at most
`max_concurrent` at a time, so a slow tool never holds the others. The runner says it started the
call, renews the run's lease while it runs, and reports the result, cut to the tool's token limit
(the whole result goes to the blob store, named in the event). A runner that dies mid-call reports
nothing: the loop notices the silence after the call's timeout and asks again with the same
idempotency key, or, for a tool that is not idempotent, reports an unknown outcome.

A call that failed in passing is tried again after a short, growing wait, within the call's timeout
(`RetryPolicy`), and a tool that keeps failing is not called for a while: its call finishes
`unavailable` at once, saying why (`processors/tools/breaker.py`).
"""

import asyncio
import json
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from opentelemetry.trace import Span

from events.blobs import BlobStore
from events.sealed_blobs import put_owned
from events.runs import RunHeartbeat
from events.tools import ToolCallFinished, ToolCallRequested, ToolCallStarted
from events.topics import RUN_EVENTS
from kernel.codec import AvroCodec
from kernel.envelope import Envelope, new_id, utc_now
from kernel.log import EventLog, OutgoingRecord
from kernel import log_context, tracing
from kernel.runtime import Delivery, Processor, encode
from kernel.sealed_payloads import subject_of
from processors.metrics import TOOL_DURATION
from processors.tools.breaker import ToolBreakers
from processors.tools.catalog import ToolExecutor, ToolResult, clip
from processors.tools.offered import ToolCatalog

logger = logging.getLogger(__name__)

TOOL_RUNNERS_GROUP = "tool-runners"
# What a result may take in the prompt when its tool sets no limit of its own.
DEFAULT_MAX_RESULT_TOKENS = 2_000


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Which results the runner tries again, how often, and how long it waits between tries.

    `unavailable` never reached the tool, so it is always safe to retry; `failed` may have had its
    effect, so only an idempotent tool's is retried; `timed_out` used the call's whole time.
    """

    max_tries: int = 3  # in all, the first included
    first_delay_s: float = 0.2  # doubled for each further retry ...
    max_delay_s: float = 2.0  # ... up to this

    def __post_init__(self) -> None:
        if self.max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {self.max_tries}")
        if not 0 <= self.first_delay_s <= self.max_delay_s:
            raise ValueError(f"need 0 <= first_delay_s <= max_delay_s, got {self.first_delay_s} and {self.max_delay_s}")

    def retries(self, result: ToolResult, *, idempotent: bool) -> bool:
        return result.status == "unavailable" or (result.status == "failed" and idempotent)

    def delay_s(self, retry: int, *, jitter: float) -> float:
        """The wait before retry number `retry` (1, 2, ...); `jitter` in [0, 1) takes off up to half, so
        calls that failed together do not all come back together."""
        return min(self.max_delay_s, self.first_delay_s * 2 ** (retry - 1)) * (1 - jitter / 2)


class ToolRunner:
    """The `tools` role's executing half: one task per requested call, bounded."""

    def __init__(
        self,
        *,
        log: EventLog,
        codec: AvroCodec,
        executor: ToolExecutor,
        catalog: ToolCatalog,
        blobs: BlobStore | None = None,
        max_concurrent: int = 16,
        heartbeat_s: float = 5.0,
        retry: RetryPolicy = RetryPolicy(),
        breakers: ToolBreakers | None = None,
        clock: Callable[[], float] = time.monotonic,  # the breakers' and the timeouts' time
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,  # waits between tries
    ) -> None:
        self._log = log
        self._codec = codec
        self._executor = executor
        self._catalog = catalog
        self._blobs = blobs
        self._slots = asyncio.Semaphore(max_concurrent)
        self._heartbeat_s = heartbeat_s
        self._retry = retry
        self.breakers = breakers or ToolBreakers()
        self._clock = clock
        self._sleep = sleep
        self.runner_id = f"{socket.gethostname()}:{os.getpid()}:{new_id('runner')}"
        self._calls: set[asyncio.Task] = set()

    def processor(self) -> Processor:
        return Processor(
            group=TOOL_RUNNERS_GROUP, topics=(RUN_EVENTS,), react=self.react, reacts_to=frozenset({ToolCallRequested.__name__})
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        for delivery in deliveries:
            if isinstance(delivery.envelope.payload, ToolCallRequested):
                # The call's task starts in the span of this reaction (taking the request), which its own span outlives.
                with tracing.reacting_to(delivery.envelope):
                    task = asyncio.create_task(
                        self._run(delivery.envelope), name=f"tool-{delivery.envelope.payload.call_id}"
                    )
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
        return []

    async def close(self) -> None:
        """Abandon the calls in flight (the loop asks again after their timeout, with the same key)."""
        for task in list(self._calls):
            task.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)

    async def _run(self, envelope: Envelope[ToolCallRequested]) -> None:
        request = envelope.payload
        log_context.bind(**log_context.envelope_fields(envelope))  # this task's log lines name its run
        # The call's span (OpenTelemetry's GenAI conventions), in the run's trace: what the call appends is its child.
        attributes = {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": request.tool_name,
            "gen_ai.tool.call.id": request.call_id, "turnlog.tool.attempt": request.attempt,
        }
        with tracing.span(f"execute_tool {request.tool_name}", cause=envelope, attributes=attributes) as calling:
            await self._run_call(envelope, calling)

    async def _run_call(self, envelope: Envelope[ToolCallRequested], calling: Span) -> None:
        request = envelope.payload
        try:
            async with self._slots:
                refusal = self.breakers.refusal(request.tool_name, self._clock())
                if refusal is not None:  # not run, so not started: the loop needs only the finish
                    result = ToolResult.unavailable(refusal, duration_ms=0)
                    TOOL_DURATION.labels(tool=request.tool_name, outcome=result.status).observe(0.0)
                else:
                    started = ToolCallStarted(
                        run_id=request.run_id, call_id=request.call_id, attempt=request.attempt,
                        runner_id=self.runner_id, started_at=utc_now(),
                    )
                    await self._log.append([self._event(started, envelope)])
                    beating = asyncio.create_task(self._beat(envelope))
                    called_at = time.perf_counter()
                    try:
                        result = await self._call(request, envelope)
                    finally:
                        beating.cancel()
                    TOOL_DURATION.labels(tool=request.tool_name, outcome=result.status).observe(time.perf_counter() - called_at)
                if calling.is_recording():
                    calling.set_attribute("turnlog.tool.outcome", result.status)
                    if result.status != "completed":
                        tracing.failed(calling, result.status)
                await self._log.append([self._event(await self._finished(request, result, envelope), envelope)])
        except asyncio.CancelledError:
            raise
        except Exception:  # the log or the blob store failed: the loop retries the call after its timeout
            logger.exception("tool call %s of run %s could not be reported", request.call_id, request.run_id)

    async def _call(self, request: ToolCallRequested, cause: Envelope) -> ToolResult:
        """The call, tried again while its failure is transient, its breaker lets it and its timeout leaves time."""
        deadline = self._clock() + request.timeout_s  # the tries and the waits share the call's timeout
        arguments = json.loads(request.arguments or "{}")
        tries, spent_ms, timeout_s = 0, 0, request.timeout_s
        while True:
            tries += 1
            result = await self._executor.call(
                request.tool_name, arguments, actor=cause.actor, idempotency_key=request.idempotency_key,
                timeout_s=timeout_s,
            )
            self.breakers.record(request.tool_name, result.status, result.content, self._clock())
            spent_ms += result.duration_ms
            if tries >= self._retry.max_tries or not self._retry.retries(result, idempotent=request.idempotent):
                break
            delay_s = self._retry.delay_s(tries, jitter=random.random())
            if self._clock() + delay_s >= deadline:
                break  # no time left for another try
            await self._sleep(delay_s)
            spent_ms += round(delay_s * 1000)
            timeout_s = deadline - self._clock()
            if timeout_s <= 0 or self.breakers.refusal(request.tool_name, self._clock()) is not None:
                break  # out of time, or it kept failing (here or elsewhere): its own last answer says more
        if tries == 1:
            return result
        # Noted on a failure only, so the model does not simply ask again at once.
        content = result.content if result.status == "completed" else f"{result.content} (after {tries} tries)"
        return replace(result, content=content, duration_ms=spent_ms)

    async def _finished(self, request: ToolCallRequested, result: ToolResult, cause: Envelope) -> ToolCallFinished:
        limit = self._catalog.max_result_tokens(request.tool_name) or DEFAULT_MAX_RESULT_TOKENS
        shown = clip(result.content, limit)
        blob = None
        if shown != result.content and self._blobs is not None:
            # The whole result is the run owner's content: sealed under their key (docs/encryption.md).
            blob = (await put_owned(self._blobs, result.content.encode(), owner=subject_of(cause.actor))).digest
        return ToolCallFinished(
            run_id=request.run_id, call_id=request.call_id, step=request.step, tool_name=request.tool_name,
            status=result.status, result=shown, attempt=request.attempt, duration_ms=result.duration_ms,
            idempotency_key=request.idempotency_key, result_truncated=shown != result.content, result_blob=blob,
            finished_at=utc_now(), runner_id=self.runner_id, sources=result.sources,
            cpu_ms=result.cpu_ms, memory_bytes=result.memory_bytes, exit_code=result.exit_code,
        )

    async def _beat(self, cause: Envelope[ToolCallRequested]) -> None:
        """Renew the run's lease while the call runs (the watchdog ends runs that fall silent)."""
        beat = RunHeartbeat(run_id=cause.payload.run_id, worker_id=self.runner_id)
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await self._log.append([self._event(beat, cause)], durable=False)

    def _event(self, event: object, cause: Envelope) -> OutgoingRecord:
        return encode(self._codec, Envelope.wrap(event, key=cause.key, actor=cause.actor, cause=cause), topic=RUN_EVENTS)
