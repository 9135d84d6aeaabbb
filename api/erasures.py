"""`POST /v1/admin/erasures`: an org administrator erases one user of the org (`userId`) or the whole org (`orgId`).

The subject's data keys are destroyed before the answer (202), so from then on nothing of theirs opens
anywhere: the log, its backups, a replay. The read models, the search index and the blob store drop
their copies as the `SubjectErased` event reaches them (commands/erasure.py, docs/encryption.md).
"""

from pydantic import ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.access import authenticate, context_of, require_admin
from api.bodies import RequestBody, ResourceId, read_json_body
from api.presenters import iso
from api.schemas.erasures import Erasure
from commands.erasure import erase_subject
from events.erasure import ErasedFile
from events.topics import DOCUMENTS
from kernel.errors import Conflict, FieldError, InvalidRequest, NotFound
from kernel.sealing import Subject


def _without_default(schema: dict) -> None:
    schema.pop("default", None)  # None stands for "absent" here; a null is refused like any non-string


class ErasureBody(RequestBody):
    """Exactly one of `userId` (a user of the caller's org) and `orgId` (the caller's own org)."""

    # The document says "exactly one" too, so clients and fuzzers know a body with neither or both is a 400.
    model_config = ConfigDict(
        **RequestBody.model_config, json_schema_extra={"oneOf": [{"required": ["userId"]}, {"required": ["orgId"]}]}
    )

    # Absent, not null: the document's `oneOf` counts a key as given when it is there.
    user_id: ResourceId = Field(default=None, json_schema_extra=_without_default)  # type: ignore[assignment]
    org_id: ResourceId = Field(default=None, json_schema_extra=_without_default)  # type: ignore[assignment]


async def create_erasure(request: Request) -> JSONResponse:
    principal = authenticate(request)
    require_admin(principal, "erasing a user's or the org's data")
    context = context_of(request)
    body = await read_json_body(request, ErasureBody, max_bytes=context.limits.max_small_body_bytes)
    if (body.user_id is None) == (body.org_id is None):
        raise InvalidRequest(
            detail="request body is invalid: give either userId or orgId",
            errors=[FieldError(field="userId", message="give either userId or orgId")],
        )
    if body.org_id is not None and body.org_id != principal.org_id:
        raise NotFound(detail=f"org {body.org_id} does not exist")  # another tenant's org answers like a missing one
    if body.user_id == principal.user_id:
        # Not by oneself, mid-session: another administrator, or an operator with `turnlog erase`.
        raise Conflict(detail="an administrator cannot erase themselves here: ask another administrator, or run turnlog erase")
    if context.keys is None:
        raise NotFound(detail="erasure is not offered by this server: it holds no data keys")
    subject = Subject(org_id=principal.org_id, user_id=body.user_id)
    # Listed before the keys go: the read models hold the files' rows until the erasure reaches them.
    await context.caught_up(topic=DOCUMENTS)
    owned = await context.read_models.owned_files(org_id=subject.org_id, owner_id=subject.user_id)
    files = [ErasedFile(file_id=row.file_id, workspace_id=row.workspace_id, digest=row.digest) for row in owned]
    erased = await erase_subject(
        subject, files=files, log=context.log, codec=context.codec, keys=context.keys, requested_by=principal.user_id
    )
    answer = Erasure(
        org_id=erased.org_id, user_id=erased.user_id, keys_destroyed=erased.keys_destroyed, files=len(erased.files),
        requested_by=erased.requested_by, erased_at=iso(erased.erased_at),
    )
    return JSONResponse(answer.wire(), status_code=202)
