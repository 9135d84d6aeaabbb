"""The org administrators' API keys: create (the key shown once), list, read and revoke, within their own org.

Each change is an event on `api-keys` appended durably by this instance, which answers once its own key view has
folded it: the key works (or is refused) here at once, and on every other instance within the view's bound
(projections/api_keys.py). No decider is needed: a key's id is fresh, and a revocation is idempotent.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.access import authenticate, context_of, require_admin
from api.api_keys import KEY_ID_PATTERN, mint_api_key
from api.auth import MAX_WORKSPACES_PER_TOKEN, Principal
from api.bodies import RequestBody, ResourceId, read_json_body
from api.presenters import iso
from api.schemas.api_keys import ApiKey, ApiKeyList, CreatedApiKey
from events.api_keys import MAX_KEY_DAYS, ApiKeyCreated, ApiKeyRevoked
from events.topics import API_KEYS
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope, utc_now
from kernel.errors import NotFound, Unavailable
from kernel.log import OutgoingRecord
from kernel.runtime import encode
from projections.api_keys import ApiKeyState, ApiKeyView

_KEY_ID = re.compile(KEY_ID_PATTERN)
Reason = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class CreateApiKeyBody(RequestBody):
    """`POST /v1/admin/api-keys`: a key acting as `userId` (the administrator by default) in `workspaceIds`."""

    name: Reason = ""
    user_id: ResourceId | None = None
    workspace_ids: Annotated[list[ResourceId], Field(min_length=1, max_length=MAX_WORKSPACES_PER_TOKEN)]
    role: Literal["member", "admin"] = "member"
    expires_in_days: Annotated[int, Field(ge=1, le=MAX_KEY_DAYS)] | None = None


class RevokeApiKeyBody(RequestBody):
    """`DELETE /v1/admin/api-keys/{keyId}`, body optional."""

    reason: Reason = ""


def key_created(
    *, org_id: str, user_id: str, workspace_ids: tuple[str, ...], role: str, name: str, created_by: str,
    expires_in_days: int | None, now: datetime,
) -> tuple[ApiKeyCreated, str]:
    """A fresh key's event and the key itself (to show once): what the admin API and `turnlog keys create` append."""
    minted = mint_api_key()
    created = ApiKeyCreated(
        key_id=minted.key_id, secret_sha256=minted.secret_sha256, org_id=org_id, user_id=user_id,
        workspace_ids=tuple(dict.fromkeys(workspace_ids)), role=role, name=name, created_by=created_by, created_at=now,
        expires_at=now + timedelta(days=expires_in_days) if expires_in_days is not None else None,
    )
    return created, minted.token


def key_record(codec: AvroCodec, event: ApiKeyCreated | ApiKeyRevoked, *, by: Actor) -> OutgoingRecord:
    return encode(codec, Envelope.wrap(event, key=event.key_id, actor=by), topic=API_KEYS)


def api_key_json(key: ApiKeyState, *, now: datetime) -> dict:
    return api_key_model(key, now=now).wire()


def api_key_model(key: ApiKeyState, *, now: datetime) -> ApiKey:
    return ApiKey(
        key_id=key.key_id, name=key.name, org_id=key.org_id, user_id=key.user_id, workspace_ids=list(key.workspace_ids),
        role=key.role, status=key.status(now), created_by=key.created_by, created_at=iso(key.created_at),
        expires_at=iso(key.expires_at), revoked_at=iso(key.revoked_at), revoked_by=key.revoked_by,
    )


async def create_api_key(request: Request) -> JSONResponse:
    principal, view = _administrator(request)
    context = context_of(request)
    body = await read_json_body(request, CreateApiKeyBody, max_bytes=context.limits.max_small_body_bytes)
    now = utc_now()
    created, token = key_created(
        org_id=principal.org_id, user_id=body.user_id or principal.user_id, workspace_ids=tuple(body.workspace_ids),
        role=body.role, name=body.name, created_by=principal.user_id, expires_in_days=body.expires_in_days, now=now,
    )
    if view.get(created.key_id) is not None:  # 64 random bits: never seen, but the first key of an id would win
        raise Unavailable(detail="a fresh key id was already taken; retry", retry_after_s=0)
    [record] = await context.log.append([key_record(context.codec, created, by=_actor(principal))], durable=True)
    await view.wait_until_applied(record.offset)
    key = _known(view, created.key_id)
    shown = CreatedApiKey(**api_key_model(key, now=now).model_dump(), key=token)
    return JSONResponse(shown.wire(), status_code=201, headers={"Location": f"/v1/admin/api-keys/{key.key_id}"})


async def list_api_keys(request: Request) -> JSONResponse:
    principal, view = _administrator(request)
    await view.catch_up()  # keys created or revoked through another instance a moment ago
    now = utc_now()
    listed = ApiKeyList(api_keys=[api_key_model(key, now=now) for key in view.of_org(principal.org_id)])
    return JSONResponse(listed.wire())


async def get_api_key(request: Request) -> JSONResponse:
    principal, view = _administrator(request)
    key = await _find(request, principal, view)
    return JSONResponse(api_key_json(key, now=utc_now()))


async def revoke_api_key(request: Request) -> JSONResponse:
    """Revoke the key (idempotent: a key already revoked is answered as it is)."""
    principal, view = _administrator(request)
    context = context_of(request)
    body = await read_json_body(
        request, RevokeApiKeyBody, max_bytes=context.limits.max_small_body_bytes, allow_empty=True
    )
    key = await _find(request, principal, view)
    if key.revoked_at is None:
        revoked = ApiKeyRevoked(
            key_id=key.key_id, org_id=key.org_id, revoked_by=principal.user_id, reason=body.reason, revoked_at=utc_now()
        )
        [record] = await context.log.append([key_record(context.codec, revoked, by=_actor(principal))], durable=True)
        await view.wait_until_applied(record.offset)
        key = _known(view, key.key_id)
    return JSONResponse(api_key_json(key, now=utc_now()))


def _administrator(request: Request) -> tuple[Principal, ApiKeyView]:
    principal = authenticate(request)
    require_admin(principal, "managing your org's API keys")
    view = context_of(request).api_keys
    if view is None:
        raise NotFound(detail="API keys are off on this server")
    return principal, view


async def _find(request: Request, principal: Principal, view: ApiKeyView) -> ApiKeyState:
    """The org's key named in the path; NotFound for a key of another org, exactly as for a missing one."""
    key_id = request.path_params["key_id"]
    if not _KEY_ID.fullmatch(key_id):
        raise NotFound(detail=f"API key {key_id} does not exist")
    if view.get(key_id) is None:
        await view.catch_up()
    key = view.get(key_id)
    if key is None or key.org_id != principal.org_id:
        raise NotFound(detail=f"API key {key_id} does not exist")
    return key


def _known(view: ApiKeyView, key_id: str) -> ApiKeyState:
    key = view.get(key_id)
    if key is None:  # unreachable: the view has folded the record that made it
        raise Unavailable(detail=f"API key {key_id} is not in this instance's view; retry shortly", retry_after_s=1)
    return key


def _actor(principal: Principal) -> Actor:
    return Actor(user_id=principal.user_id, org_id=principal.org_id, workspace_id="")
