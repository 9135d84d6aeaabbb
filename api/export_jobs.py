"""Background exports: the export document written into the blob store in parts, with progress, by this API process.

A job lives in the memory of the API process that started it, and nowhere else: a restart loses every job (an
unfinished one stops; every job's parts are deleted as the process stops, since nothing would name them), and behind
several API instances only the one that started a job answers for it (404 elsewhere: route a user's export calls
to one instance, or use the streamed `GET /v1/export`, which any instance serves). The document is the one
`GET /v1/export` streams, cut into parts of about `part_bytes` as it is written, each part a blob: the job never
holds more than a part and a page of rows, and the download streams the parts back in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from api.access import scope_of
from api.auth import Principal
from api.context import ApiContext
from api.export_document import ExportRequest, export_pieces
from api.presenters import iso
from api.schemas.exports import Export, ExportState
from events.blobs import BlobRef, BlobStore
from events.topics import DOCUMENTS
from kernel.envelope import new_id, utc_now
from kernel.errors import Conflict, NotFound, TurnlogError, Unavailable
from kernel.sealing import Subject
from events.sealed_blobs import put_owned

logger = logging.getLogger(__name__)

PART_BYTES = 1024 * 1024
KEPT_FOR_S = 24 * 3600.0  # a finished job answers (and its download works) this long
MAX_JOBS = 1000  # jobs remembered at once, finished ones forgotten oldest first
MAX_RUNNING = 2  # jobs that read the store at once; the rest wait, `queued`
_STOPPED = "the server stopped before the export was finished; start another"


@dataclass(kw_only=True)
class ExportJob:
    """One background export: whose, of what, and how far it got."""

    export_id: str
    org_id: str
    user_id: str
    workspace_ids: tuple[str, ...]  # the workspaces it covers: the token's then, or the one asked for
    workspace_id: str | None
    created_at: datetime
    state: ExportState = "queued"
    conversations_total: int | None = None
    conversations_done: int = 0
    parts: list[BlobRef] = field(default_factory=list)
    part_bytes: list[int] = field(default_factory=list)  # each part's size as downloaded (stored sealed, it is larger)
    finished_at: datetime | None = None
    finished_monotonic: float | None = None
    failure_reason: str = ""

    @property
    def size(self) -> int | None:
        return sum(self.part_bytes) if self.state == "completed" else None

    @property
    def download_url(self) -> str:
        return f"/v1/exports/{self.export_id}/download"

    def json(self) -> dict:
        failure = {"failure_reason": self.failure_reason} if self.failure_reason else {}
        return Export(
            export_id=self.export_id, state=self.state, workspace_id=self.workspace_id,
            conversations_total=self.conversations_total, conversations_done=self.conversations_done,
            created_at=iso(self.created_at), finished_at=iso(self.finished_at), size=self.size,
            download_url=self.download_url if self.state == "completed" else None, **failure,
        ).wire()

    def visible_to(self, principal: Principal) -> bool:
        """Its user's alone, and only while their token still grants every workspace it covers."""
        return (
            self.org_id == principal.org_id
            and self.user_id == principal.user_id
            and all(principal.can_use(workspace_id) for workspace_id in self.workspace_ids)
        )


class ExportJobs:
    """The export jobs of this process (see the module's docstring for what that means behind several instances)."""

    def __init__(
        self, *, blobs: BlobStore, part_bytes: int = PART_BYTES, kept_for_s: float = KEPT_FOR_S, max_jobs: int = MAX_JOBS,
        max_running: int = MAX_RUNNING,
    ) -> None:
        self._blobs = blobs  # where the parts go, and whence they are deleted once their job is forgotten
        self._deletions: set[asyncio.Task[None]] = set()
        self._part_bytes = part_bytes
        self._kept_for_s = kept_for_s
        self._max_jobs = max_jobs
        self._slots = asyncio.Semaphore(max_running)
        self._jobs: OrderedDict[str, ExportJob] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, context: ApiContext, principal: Principal, *, workspace_id: str | None) -> ExportJob:
        """A new job for the caller's data (one workspace, or every one the token grants); 409 while one of theirs runs."""
        self._forget_old()
        for job in self._jobs.values():
            if job.user_id == principal.user_id and job.org_id == principal.org_id and job.finished_at is None:
                raise Conflict(detail=f"your export {job.export_id} is still {job.state}: wait for it to finish")
        if len(self._jobs) >= self._max_jobs:
            raise Unavailable(detail="too many exports are running on this server; retry later", retry_after_s=60)
        job = ExportJob(
            export_id=new_id("exp"), org_id=principal.org_id, user_id=principal.user_id,
            workspace_ids=(workspace_id,) if workspace_id is not None else principal.workspace_ids,
            workspace_id=workspace_id, created_at=utc_now(),
        )
        self._jobs[job.export_id] = job
        task = asyncio.create_task(self._run(context, principal, job), name=f"export {job.export_id}")
        self._tasks[job.export_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.export_id, None))
        return job

    def find(self, principal: Principal, export_id: str) -> ExportJob:
        """The caller's job; another user's, an expired or an unknown one are all the same 404."""
        self._forget_old()
        job = self._jobs.get(export_id)
        if job is None or not job.visible_to(principal):
            raise NotFound(detail=f"export {export_id} does not exist")
        return job

    async def close(self) -> None:
        """Stop every unfinished job (the process is shutting down)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for job in self._jobs.values():
            if job.finished_at is None:  # cancelled before it began
                job.state, job.failure_reason = "failed", _STOPPED
                job.finished_at, job.finished_monotonic = utc_now(), time.monotonic()
        # After a restart nothing names the parts: they go now, with those of jobs forgotten earlier.
        await asyncio.gather(*self._deletions, *(self._delete_parts(job) for job in self._jobs.values()))

    async def _run(self, context: ApiContext, principal: Principal, job: ExportJob) -> None:
        try:
            async with self._slots:
                job.state = "running"
                # Read-your-writes, as the streamed export: every conversation event and upload now on the log.
                await context.caught_up()
                await context.caught_up(topic=DOCUMENTS)
                scope = scope_of(principal)
                job.conversations_total = await context.read_models.conversation_count(scope, workspace_id=job.workspace_id)
                await self._write(context, job, ExportRequest(scope=scope, workspace_id=job.workspace_id, exported_at=utc_now()))
                job.state = "completed"
        except asyncio.CancelledError:
            job.state, job.failure_reason = "failed", _STOPPED
            raise
        except TurnlogError as error:
            job.state, job.failure_reason = "failed", error.detail
        except Exception:
            logger.exception("export %s failed", job.export_id)
            job.state, job.failure_reason = "failed", "an internal error stopped the export; start another"
        finally:
            job.finished_at = utc_now()
            job.finished_monotonic = time.monotonic()

    async def _write(self, context: ApiContext, job: ExportJob, request: ExportRequest) -> None:
        """The document into the blob store, a part at a time, counting conversations as they are written."""

        def conversation_done() -> None:
            job.conversations_done += 1
            # A conversation created after the count may still be exported: the total is never less than what is done.
            job.conversations_total = max(job.conversations_total or 0, job.conversations_done)

        part: list[bytes] = []
        part_size = 0
        pieces = export_pieces(context.read_models, request, conversation_done=conversation_done)
        try:
            async for piece in pieces:
                encoded = piece.encode()
                part.append(encoded)
                part_size += len(encoded)
                if part_size >= self._part_bytes:
                    await self._put_part(job, b"".join(part))
                    part, part_size = [], 0
        finally:
            await pieces.aclose()
        if part:
            await self._put_part(job, b"".join(part))

    async def _put_part(self, job: ExportJob, data: bytes) -> None:
        """A part of the document into the blob store, sealed under its user's data key (docs/encryption.md)."""
        job.parts.append(await put_owned(self._blobs, data, owner=Subject(org_id=job.org_id, user_id=job.user_id)))
        job.part_bytes.append(len(data))

    async def _delete_parts(self, job: ExportJob) -> None:
        parts, job.parts = job.parts, []
        try:
            for part in parts:
                await self._blobs.delete(part)
        except Unavailable as error:
            logger.warning("export %s: %d parts stay in the blob store: %s", job.export_id, len(parts), error.detail)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for export_id, job in list(self._jobs.items()):
            if job.finished_monotonic is not None and now - job.finished_monotonic > self._kept_for_s:
                self._forget(export_id)
        for export_id, job in list(self._jobs.items()):
            if len(self._jobs) < self._max_jobs:
                break
            if job.finished_at is not None:
                self._forget(export_id)

    def _forget(self, export_id: str) -> None:
        """Drop a finished job, and delete its parts in the background (its download is a 404 from now on)."""
        job = self._jobs.pop(export_id)
        if job.parts:
            deletion = asyncio.create_task(self._delete_parts(job), name=f"export {export_id} parts")
            self._deletions.add(deletion)
            deletion.add_done_callback(self._deletions.discard)
