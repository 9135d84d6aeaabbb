"""File endpoints: upload (multipart, streamed and capped), read, list, delete; and the check on a turn's attachments.

An upload is answered 201 once its bytes are in the blob store and its `FileUploaded` is durably on
the log; the ingester takes it from there, and `GET /v1/files/{id}` shows how far it got. Reads
come from the files read model behind the read-your-writes fence on `documents`. A file of another
org, of a workspace the token does not grant, or another user's owner-only file answers 404, exactly
like a missing one. There is no decider for files: each upload makes a new id, and a deletion is
idempotent, so no two writers can disagree about a file.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.access import actor_of, authenticate, context_of, int_query, read_patiently, require_workspace, scope_of
from api.scoped_ids import Ownership, file_scope, new_scoped_id, ownership
from api.auth import Principal
from api.bodies import RESOURCE_ID_PATTERN, RESOURCE_ID_RULE
from api.context import ApiContext
from api.multipart import boundary_of, read_multipart_form, size_text
from api.presenters import iso
from events.documents import FILE_ACLS, FileDeleted, FileUploaded
from kernel.envelope import Envelope, utc_now
from kernel.sealing import Subject
from events.sealed_blobs import put_owned
from events.topics import DOCUMENTS
from processors.ingestion.extraction.detection import detect_media_type
from kernel.runtime import encode
from projections.read_models import FileView
from kernel.errors import (
    FieldError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnprocessableContent,
)

FILE_FIELD = "file"
TEXT_FIELDS = ("workspaceId", "acl")
# What a form may add around the file itself: its part headers, the other fields, the boundaries.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_FILENAME_CHARS = 255
_RESOURCE_ID = re.compile(RESOURCE_ID_PATTERN)
_READABLE_TIMEOUT_S = 10.0


def file_json(view: FileView) -> dict:
    shape: dict[str, object] = {
        "fileId": view.file_id,
        "workspaceId": view.workspace_id,
        "ownerId": view.owner_id,
        "filename": view.filename,
        "mediaType": view.media_type,
        "size": view.size,
        "acl": view.acl,
        "ingestionState": view.state,
        "progress": {"chunksTotal": view.chunks_total, "chunksIndexed": view.chunks_indexed, "pages": view.pages},
        "createdAt": iso(view.created_at),
    }
    if view.title:
        shape["title"] = view.title
    if view.failure_reason:
        shape["failureReason"] = view.failure_reason
    return shape


async def upload_file(request: Request) -> JSONResponse:
    principal = authenticate(request)
    context = context_of(request)
    max_bytes = context.limits.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise PayloadTooLarge(detail=f"the file is larger than the upload limit of {size_text(max_bytes)}", max_bytes=max_bytes)
    form = await read_multipart_form(
        request.stream(),
        boundary=boundary_of(request.headers.get("content-type")),
        file_fields={FILE_FIELD},
        text_fields=TEXT_FIELDS,
        max_file_bytes=max_bytes,
    )
    upload = form.files.get(FILE_FIELD)
    workspace_id = form.fields.get("workspaceId", "")
    acl = form.fields.get("acl") or "workspace"
    errors = []
    if upload is None:
        errors.append(FieldError(field=FILE_FIELD, message="a file part is required"))
    if not _RESOURCE_ID.fullmatch(workspace_id):
        errors.append(FieldError(field="workspaceId", message="field is required" if not workspace_id else RESOURCE_ID_RULE))
    if acl not in FILE_ACLS:
        errors.append(FieldError(field="acl", message="must be 'workspace' or 'owner'"))
    if errors:
        summary = "; ".join(f"{error.field}: {error.message}" for error in errors)
        raise InvalidRequest(detail=f"the upload form is invalid: {summary}", errors=errors)
    assert upload is not None
    require_workspace(principal, workspace_id)
    filename = _base_name(upload.filename)
    if not filename:
        raise InvalidRequest(detail="the file part needs a filename (its extension tells turnlog what it is)")
    if not upload.data:
        raise InvalidRequest(detail=f"{filename!r} is empty: there is nothing to read in it")
    media_type = detect_media_type(filename, upload.content_type, upload.data)  # 415 when turnlog cannot read it
    # Sealed under the uploader's data key (events/sealed_blobs.py): erasing the user shreds the bytes.
    blob = await put_owned(context.blobs, upload.data, owner=Subject(org_id=principal.org_id, user_id=principal.user_id))
    size = len(upload.data)  # the upload's own size: the blob's is the sealed bytes'
    uploaded = FileUploaded(
        file_id=new_scoped_id(context.secret, "file", file_scope(principal.org_id, workspace_id)),
        workspace_id=workspace_id,
        owner_id=principal.user_id,
        acl=acl,
        filename=filename,
        media_type=media_type.value,
        size=size,
        digest=blob.digest,
        uploaded_at=utc_now(),
    )
    await _append(context, Envelope.wrap(uploaded, key=uploaded.file_id, actor=actor_of(principal, workspace_id)))
    view = FileView(
        org_id=principal.org_id, workspace_id=workspace_id, owner_id=principal.user_id, file_id=uploaded.file_id, acl=acl,
        filename=filename, media_type=uploaded.media_type, size=size, digest=blob.digest,
        created_at=uploaded.uploaded_at, state="pending", pages=0, chunks_total=0, chunks_indexed=0, title="", failure_reason="",
    )
    return JSONResponse(file_json(view), status_code=201, headers={"Location": f"/v1/files/{uploaded.file_id}"})


async def get_file(request: Request) -> JSONResponse:
    principal = authenticate(request)
    view = await find_file(context_of(request), principal, request.path_params["file_id"])
    return JSONResponse(file_json(view))


async def list_files(request: Request) -> JSONResponse:
    principal = authenticate(request)
    context = context_of(request)
    workspace_id = request.query_params.get("workspaceId") or None
    if workspace_id is not None:
        require_workspace(principal, workspace_id)
    limit = int_query(request, "limit", default=context.limits.default_page_size, minimum=1, maximum=context.limits.max_page_size)
    before = request.query_params.get("before") or None
    await context.caught_up(topic=DOCUMENTS)
    views = await context.read_models.files(scope_of(principal), workspace_id=workspace_id, before=before, limit=limit + 1)
    page = views[:limit]
    return JSONResponse({"files": [file_json(view) for view in page], "nextBefore": page[-1].file_id if len(views) > limit else None})


async def delete_file(request: Request) -> Response:
    principal = authenticate(request)
    context = context_of(request)
    view = await find_file(context, principal, request.path_params["file_id"])
    if view.owner_id != principal.user_id:
        raise Forbidden(detail=f"only the user who uploaded file {view.file_id} can delete it")
    deleted = FileDeleted(file_id=view.file_id, deleted_at=utc_now())
    # The deletion's actor names the file's workspace: the ingester removes its chunks there.
    await _append(context, Envelope.wrap(deleted, key=view.file_id, actor=actor_of(principal, view.workspace_id)))
    return Response(status_code=204)


async def find_file(context: ApiContext, principal: Principal, file_id: str) -> FileView:
    """The file if the caller may see it and it is not deleted; otherwise NotFound, whoever owns it."""
    scopes = [file_scope(principal.org_id, workspace_id) for workspace_id in principal.workspace_ids]
    owned = ownership(context.secret, file_id, prefix="file", scopes=scopes)
    if owned is Ownership.NOT_CALLERS:  # another tenant's file and an unknown id take this same path (api/scoped_ids.py)
        raise NotFound(detail=f"file {file_id} does not exist")
    await context.caught_up(key=file_id, topic=DOCUMENTS)
    view = await context.read_models.file(scope_of(principal), file_id)
    if view is not None:
        return view
    if owned is Ownership.LEGACY:  # from before tags: long since projected, so not looked for patiently
        raise NotFound(detail=f"file {file_id} does not exist")
    # On Kafka another instance's readers can lag a write by a moment, and the fence with them: if
    # the log shows the file (and the caller may see it), its row is on its way; wait for it briefly.
    if not await _on_the_log_for(context, principal, file_id):
        raise NotFound(detail=f"file {file_id} does not exist")
    for _ in range(100):
        await asyncio.sleep(0.02)
        view = await context.read_models.file(scope_of(principal), file_id)
        if view is not None:
            return view
    raise Unavailable(detail=f"file {file_id} is not in the read models yet; retry shortly", retry_after_s=1)


async def _on_the_log_for(context: ApiContext, principal: Principal, file_id: str) -> bool:
    """Whether the log holds the file, not deleted, visible to `principal` (looked for again for ~1.3 s)."""
    records = await read_patiently(context, DOCUMENTS, key=file_id)
    if not records:
        return False
    envelopes = [context.codec.decode(record.value) for record in records]
    uploaded = next((e for e in envelopes if isinstance(e.payload, FileUploaded)), None)
    if uploaded is None or any(isinstance(e.payload, FileDeleted) for e in envelopes):
        return False
    file = uploaded.payload
    return (
        uploaded.actor.org_id == principal.org_id
        and principal.can_use(file.workspace_id)
        and (file.acl == "workspace" or file.owner_id == principal.user_id)
    )


async def check_attachments(
    context: ApiContext, principal: Principal, *, workspace_id: str, file_ids: Sequence[str], field: str = "attachments"
) -> None:
    """Every attached file exists, is visible to the caller, lives in the conversation's workspace and was readable (422 otherwise).

    `field`: the body's name for the list, in the errors (`fileIds` for a search).
    """
    scope = [file_scope(principal.org_id, workspace_id)]
    # Only an id tagged for this workspace can name one of its files: another tenant's id and an unknown one are
    # refused alike, at once, without waiting for their partitions' projections (api/scoped_ids.py).
    candidates = [
        file_id for file_id in dict.fromkeys(file_ids)
        if ownership(context.secret, file_id, prefix="file", scopes=scope) is not Ownership.NOT_CALLERS
    ]
    for file_id in candidates:
        await context.caught_up(key=file_id, topic=DOCUMENTS)
    views = await context.read_models.files_by_id(scope_of(principal), candidates)
    errors = []
    for position, file_id in enumerate(file_ids):
        view = views.get(file_id)
        if view is None or view.workspace_id != workspace_id:
            errors.append(FieldError(field=f"{field}[{position}]", message=f"no file {file_id} in workspace {workspace_id}"))
        elif view.state == "failed":
            errors.append(
                FieldError(field=f"{field}[{position}]", message=f"file {file_id} could not be read: {view.failure_reason}")
            )
    if errors:
        raise UnprocessableContent(detail=f"{errors[0].field}: {errors[0].message}", errors=errors)


async def _append(context: ApiContext, envelope: Envelope) -> None:
    """Append durably, then wait until every API instance's readers see it (Kafka shows a write partition by partition)."""
    [record] = await context.log.append([encode(context.codec, envelope, topic=DOCUMENTS)], durable=True)
    deadline = time.monotonic() + _READABLE_TIMEOUT_S
    while not await context.log.readable(DOCUMENTS, key=record.key, offset=record.offset):
        if time.monotonic() > deadline:
            raise Unavailable(detail="the file was saved but is not readable yet; retry shortly", retry_after_s=1)
        await asyncio.sleep(0.002)


def _base_name(filename: str) -> str:
    # Browsers may send a path ("C:\\fakepath\\report.pdf"): only the last part names the file.
    name = re.split(r"[\\/]", filename)[-1].strip()
    name = "".join(character for character in name if character.isprintable())
    return name[:MAX_FILENAME_CHARS]
