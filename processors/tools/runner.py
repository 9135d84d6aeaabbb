"""The tool runner: executes the calls the loop requests, each within its timeout, and reports how each ended.

A requested call is taken at once (its request committed) and run on a task of its own, at most
`max_concurrent` at a time, so a slow tool never holds the others. The runner says it started the
call, renews the run's lease while it runs, and reports the result, cut to the tool's token limit
(the whole result goes to the blob store, named in the event). A runner that dies mid-call reports
nothing: the loop notices the silence after the call's timeout and asks again with the same
idempotency key, or, for a tool that is not idempotent, reports an unknown outcome.
"""

import asyncio
import json
import logging
import os
import socket
from collections.abc import Sequence

from events.blobs import BlobStore
from events.runs import RunHeartbeat
from events.tools import ToolCallFinished, ToolCallRequested, ToolCallStarted
from events.topics import RUN_EVENTS
from kernel.codec import AvroCodec
from kernel.envelope import Envelope, new_id, utc_now
from kernel.log import EventLog, OutgoingRecord
from kernel.runtime import Delivery, Processor, encode
from processors.tools.catalog import ToolExecutor, ToolResult, clip
from processors.tools.offered import ToolCatalog

logger = logging.getLogger(__name__)

TOOL_RUNNERS_GROUP = "tool-runners"
# What a result may take in the prompt when its tool sets no limit of its own.
DEFAULT_MAX_RESULT_TOKENS = 2_000


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
    ) -> None:
        self._log = log
        self._codec = codec
        self._executor = executor
        self._catalog = catalog
        self._blobs = blobs
        self._slots = asyncio.Semaphore(max_concurrent)
        self._heartbeat_s = heartbeat_s
        self.runner_id = f"{socket.gethostname()}:{os.getpid()}:{new_id('runner')}"
        self._calls: set[asyncio.Task] = set()

    def processor(self) -> Processor:
        return Processor(group=TOOL_RUNNERS_GROUP, topics=(RUN_EVENTS,), react=self.react)

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        for delivery in deliveries:
            if isinstance(delivery.envelope.payload, ToolCallRequested):
                task = asyncio.create_task(self._run(delivery.envelope), name=f"tool-{delivery.envelope.payload.call_id}")
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
        try:
            async with self._slots:
                started = ToolCallStarted(
                    run_id=request.run_id, call_id=request.call_id, attempt=request.attempt, runner_id=self.runner_id,
                    started_at=utc_now(),
                )
                await self._log.append([self._event(started, envelope)])
                beating = asyncio.create_task(self._beat(envelope))
                try:
                    result = await self._executor.call(
                        request.tool_name, json.loads(request.arguments or "{}"), actor=envelope.actor,
                        idempotency_key=request.idempotency_key, timeout_s=request.timeout_s,
                    )
                finally:
                    beating.cancel()
                await self._log.append([self._event(await self._finished(request, result, envelope), envelope)])
        except asyncio.CancelledError:
            raise
        except Exception:  # the log or the blob store failed: the loop retries the call after its timeout
            logger.exception("tool call %s of run %s could not be reported", request.call_id, request.run_id)

    async def _finished(self, request: ToolCallRequested, result: ToolResult, cause: Envelope) -> ToolCallFinished:
        limit = self._catalog.max_result_tokens(request.tool_name) or DEFAULT_MAX_RESULT_TOKENS
        shown = clip(result.content, limit)
        blob = None
        if shown != result.content and self._blobs is not None:
            blob = (await self._blobs.put(result.content.encode())).digest
        return ToolCallFinished(
            run_id=request.run_id, call_id=request.call_id, step=request.step, tool_name=request.tool_name,
            status=result.status, result=shown, attempt=request.attempt, duration_ms=result.duration_ms,
            idempotency_key=request.idempotency_key, result_truncated=shown != result.content, result_blob=blob,
            finished_at=utc_now(), runner_id=self.runner_id,
        )

    async def _beat(self, cause: Envelope[ToolCallRequested]) -> None:
        """Renew the run's lease while the call runs (the watchdog ends runs that fall silent)."""
        beat = RunHeartbeat(run_id=cause.payload.run_id, worker_id=self.runner_id)
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await self._log.append([self._event(beat, cause)], durable=False)

    def _event(self, event: object, cause: Envelope) -> OutgoingRecord:
        return encode(self._codec, Envelope.wrap(event, key=cause.key, actor=cause.actor, cause=cause), topic=RUN_EVENTS)
