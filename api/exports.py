"""Export endpoints: a user's own data as one JSON document, streamed (`GET /v1/export`) or built in the background
(`POST /v1/exports`, then its progress and its download).

The document (`api.schemas.exports.ExportDocument`) holds the conversations the caller owns in the workspaces their
token grants, in their org, with every turn and each run's summary, and the metadata of the files they uploaded:
never another user's data (a colleague's conversations, or files shared with the workspace by others) and never a
file's bytes. It is written from the read models page by page (api/export_document.py), so a user with many
thousands of turns is never in memory at once. Once the answer has started, a failure cuts the connection before
the chunked body ends: a truncated export never parses as a whole one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from api.access import authenticate, context_of, require_workspace, scope_of
from api.bodies import RequestBody, ResourceId, read_json_body
from api.export_document import ExportRequest, export_pieces
from api.export_jobs import ExportJobs
from events.blobs import BlobRef, BlobStore
from events.topics import DOCUMENTS
from kernel.envelope import utc_now
from kernel.errors import Conflict

JSON_MEDIA_TYPE = "application/json"
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class StartExportBody(RequestBody):
    """`POST /v1/exports`; the body may be absent: every workspace the token grants."""

    workspace_id: ResourceId | None = None


async def export(request: Request) -> StreamingResponse:
    """`GET /v1/export[?workspaceId=]`: the document, streamed as it is read."""
    principal = authenticate(request)
    context = context_of(request)
    workspace_id = request.query_params.get("workspaceId") or None
    if workspace_id is not None:
        require_workspace(principal, workspace_id)
    # Read-your-writes: every conversation event and upload on the log when the request came is in the export.
    await context.caught_up()
    await context.caught_up(topic=DOCUMENTS)
    exported_at = utc_now()
    pieces = export_pieces(
        context.read_models, ExportRequest(scope=scope_of(principal), workspace_id=workspace_id, exported_at=exported_at)
    )
    try:
        first = await anext(pieces)  # the first read: a store that fails here is a problem+json, not a cut body
    except BaseException:
        await pieces.aclose()
        raise
    return StreamingResponse(
        _sent(first, pieces), media_type=JSON_MEDIA_TYPE, headers=_attachment_headers(principal.user_id, exported_at)
    )


async def start_export(request: Request) -> JSONResponse:
    """`POST /v1/exports`: 202 with the job; `GET` its `Location` for progress and, once completed, its download."""
    principal = authenticate(request)
    context = context_of(request)
    body = await read_json_body(request, StartExportBody, max_bytes=context.limits.max_small_body_bytes, allow_empty=True)
    if body.workspace_id is not None:
        require_workspace(principal, body.workspace_id)
    job = _jobs(request).start(context, principal, workspace_id=body.workspace_id)
    return JSONResponse(job.json(), status_code=202, headers={"Location": f"/v1/exports/{job.export_id}"})


async def get_export(request: Request) -> JSONResponse:
    principal = authenticate(request)
    return JSONResponse(_jobs(request).find(principal, request.path_params["export_id"]).json())


async def download_export(request: Request) -> StreamingResponse:
    """The finished job's document, streamed back from its parts in the blob store (409 until it has completed)."""
    principal = authenticate(request)
    context = context_of(request)
    job = _jobs(request).find(principal, request.path_params["export_id"])
    if job.state != "completed" or job.finished_at is None:
        raise Conflict(detail=f"export {job.export_id} is {job.state}, not completed: it has nothing to download")
    parts = list(job.parts)
    first = await context.blobs.get(parts[0])  # a missing blob is a 404 before the answer starts
    headers = {**_attachment_headers(job.user_id, job.finished_at), "Content-Length": str(job.size)}
    return StreamingResponse(_parts(context.blobs, first, parts[1:]), media_type=JSON_MEDIA_TYPE, headers=headers)


def _jobs(request: Request) -> ExportJobs:
    return request.app.state.exports


async def _sent(first: str, pieces: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    try:
        yield first
        async for piece in pieces:
            yield piece
    finally:
        await pieces.aclose()


async def _parts(blobs: BlobStore, first: bytes, rest: list[BlobRef]) -> AsyncIterator[bytes]:
    yield first
    for part in rest:
        yield await blobs.get(part)


def _attachment_headers(user_id: str, exported_at: datetime) -> dict[str, str]:
    # User ids from an identity provider may hold any character: the file name keeps the safe ones.
    user = _FILENAME_UNSAFE.sub("_", user_id).strip("._") or "user"
    filename = f"turnlog-export-{user}-{exported_at.date().isoformat()}.json"
    return {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"}

