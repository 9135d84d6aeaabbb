"""`GET /openapi.json`: the OpenAPI 3.1 document of turnlog's API and its OpenAI-compatible facade.

It is generated, never written beside the code: every operation below names the request model its handler reads
(api/bodies.py, api/admin.py, ...; the facade's bodies from the tables its parsers check) and the answer models its
presenters build (api/schemas/), whose JSON Schemas pydantic writes into `components`. Errors are RFC 9457
problem+json (the facade's: OpenAI's error object), and the SSE streams list the schemas of their events.
tests/api/test_openapi.py fails when a route of api/app.py is missing here; schemathesis checks a live server
against the document (tests/api/test_schemathesis.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.admin import BudgetBody, GrantCreditsBody, RefillBody, ReinstatementBody, SuspensionBody
from api.api_key_admin import CreateApiKeyBody, RevokeApiKeyBody
from api.api_keys import KEY_ID_PATTERN
from api.exports import StartExportBody
from api.erasures import ErasureBody
from api.schemas.erasures import Erasure
from api.bodies import (
    RESOURCE_ID_PATTERN, CreateConversationBody, RegenerateBody, RenameConversationBody, SubmitTurnBody, ToolApprovalBody,
)
from api.bodies import SearchBody
from api.files import FILE_FIELD
from api.openai.chat_request import chat_request_schema
from api.openai.response_request import response_request_schema
from api.problems import PROBLEM_MEDIA_TYPE
from api.schemas.api_keys import ApiKey, ApiKeyList, CreatedApiKey
from api.schemas.conversations import ConversationCreated, ConversationPage, Conversation, RunAccepted, TurnPage
from api.schemas.exports import Export, ExportDocument
from api.schemas.files import File, FilePage
from api.schemas.governance import BudgetChange, CreditsGrant, OrgUsage, RefillChange, Reinstatement, Suspension
from api.schemas.openai_chat import ChatCompletion, ChatCompletionChunk
from api.schemas.openai_models import ModelList, ModelObject, OpenAIError
from api.schemas.openai_responses import RESPONSE_STREAM_EVENTS, ResponseObject
from api.schemas.problems import Problem
from api.schemas.runs import Run, RunCancelling, ToolApprovalAccepted
from api.schemas.analytics import AnalyticsAnswer, AnalyticsQueryList
from api.schemas.safety import SafetyDecisionPage
from api.schemas.search import SearchResults
from api.schemas.service import Health
from api.schemas.sessions import CurrentSession, SessionCreated
from api.schemas.streams import RUN_STREAM_EVENTS
from events.documents import FILE_ACLS
from events.safety import SAFETY_ACTIONS, SAFETY_STAGES

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"
SSE_MEDIA_TYPE = "text/event-stream"
JSON = "application/json"
MAX_INT32 = 2**31 - 1

Location = Literal["path", "query", "header"]


@dataclass(frozen=True, kw_only=True)
class Parameter:
    name: str
    location: Location
    schema: dict
    description: str = ""
    required: bool = False


@dataclass(frozen=True, kw_only=True)
class Answer:
    """One success status: its JSON model, and/or the SSE events it streams."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    events: Sequence[type[BaseModel]] = ()  # a `text/event-stream`: each `data:` is one of these
    events_note: str = ""
    events_json: bool = True  # every `data:` is one of `events` as JSON (so a fuzzer may check each against them)
    location: bool = False  # a `Location` header names what was created or started
    headers: tuple[tuple[str, str], ...] = ()  # other headers it always has: (name, what it says)


@dataclass(frozen=True, kw_only=True)
class Operation:
    method: str
    path: str  # as api/app.py routes it, parameters in braces
    operation_id: str
    summary: str
    tag: str
    answers: tuple[Answer, ...]
    errors: tuple[int, ...] = ()  # besides 401, 403, 429 and 503, which every authenticated operation may answer
    body: type[BaseModel] | dict | None = None  # a request model, or a JSON Schema built from a parser's own tables
    body_required: bool = True
    form: dict | None = None  # a multipart/form-data body's schema
    parameters: tuple[Parameter, ...] = ()
    public: bool = False  # no bearer token needed
    openai: bool = False  # errors in OpenAI's shape rather than problem+json

    @property
    def path_parameters(self) -> list[str]:
        return [piece[1:-1].split(":")[0] for piece in self.path.split("/") if piece.startswith("{")]


ERROR_DESCRIPTIONS = {
    400: "the request is malformed or invalid (`errors` names each field)",
    401: "no valid bearer token or API key (`WWW-Authenticate: Bearer`)",
    403: "the token does not grant this (a workspace, an administrator's action), or the user is suspended or erased",
    404: "no such resource, or one the caller may not see",
    409: "a conflict with the resource's state (a run in progress, one already finished)",
    410: "it existed and is no longer kept: a run's stream after the retention period of its deltas (its answer is kept)",
    413: "the body is larger than the limit (`maxBytes`)",
    415: "the body's media type is not one this operation reads",
    422: "the request is well formed but refers to something unusable (an attachment, a reused Idempotency-Key)",
    429: "a quota or rate limit refused it (`Retry-After`, the rate-limit fields), or too many bad tokens from this address",
    503: "a dependency is briefly unavailable; retry after `Retry-After`",
}
AUTHENTICATED_ERRORS = (401, 403, 429, 503)  # 403: also a caller whose data was erased (docs/encryption.md)
# What the connection answers before any operation sees the request (api/connections.py), so every operation may.
CONNECTION_ERROR_DESCRIPTIONS = {
    400: "the HTTP parser refused the request (a broken request line or chunked body, control bytes in a header)",
    408: "the request's head, or its body, came too slowly",
    414: "the URL is longer than the server reads (`maxBytes`): send long parameters in a request body",
    429: "this client's address holds the most connections one address may (`Retry-After`)",
    431: "a header line, the number of header lines or the whole request head is over its limit",
    503: "the server holds the most connections it takes (`Retry-After`)",
}


def _query(name: str, schema: dict, description: str = "", *, empty_is_absent: bool = True) -> Parameter:
    """A query parameter; turnlog's own read an empty value (`?limit=`) as one not given."""
    if empty_is_absent:
        schema = {"anyOf": [schema, {"const": ""}]}
    return Parameter(name=name, location="query", schema=schema, description=description)


def _integer(minimum: int, maximum: int) -> dict:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


RESOURCE_ID = {"type": "string", "pattern": RESOURCE_ID_PATTERN}
PAGE_LIMIT = _query("limit", _integer(1, 100), "at most this many (default 20)")
WORKSPACE_FILTER = _query("workspaceId", {"type": "string"}, "only this workspace (one the token grants)")
BEFORE = _query("before", {"type": "string"}, "the page after this id (the last page's `nextBefore`)")
IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key", location="header", schema={"type": "string", "pattern": r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$"},
    description="the same key with the same body answers the first run for 24 hours; with another body, 422",
)
WORKSPACE_HEADERS = tuple(
    Parameter(
        name=name, location="header", schema={"type": "string"},
        description="the workspace the call is stored in and billed to (one the token grants); else the token's only one",
    )
    for name in ("X-Turnlog-Workspace", "OpenAI-Project")
)
BODY_ERRORS = (400, 413, 415)
RUN_STREAM_NOTE = (
    "Each event's `id:` is its number in the run's stream (1, 2, ...): reconnect with `Last-Event-ID` to resume"
    " after it. A comment line (`: ping`) keeps an idle stream open. The stream closes after its terminal event."
    " A run older than the retention period (`--run-events-retention-s`, 7 days) answers 410: its deltas are trimmed."
)
FILE_FORM = {
    "type": "object",
    "properties": {
        FILE_FIELD: {"type": "string", "format": "binary", "minLength": 1, "description": "PDF, DOCX, HTML, Markdown or text"},
        "workspaceId": {**RESOURCE_ID, "description": "a workspace the token grants"},
        "acl": {"enum": list(FILE_ACLS), "description": "who sees it: the workspace's members (default) or its owner"},
    },
    "required": [FILE_FIELD, "workspaceId"],
    "additionalProperties": False,
}
EXPORT_HEADERS = (("Content-Disposition", 'attachment; filename="turnlog-export-<user>-<date>.json"'),)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="GET", path="/healthz", operation_id="health", summary="Whether the process serves", tag="service",
        public=True, answers=(Answer(status=200, description="up", model=Health),),
    ),
    Operation(
        method="GET", path="/openapi.json", operation_id="openapi", summary="This document", tag="service", public=True,
        answers=(Answer(status=200, description="the OpenAPI 3.1 document"),),
    ),
    Operation(
        method="POST", path="/v1/conversations", operation_id="createConversation", summary="Create a conversation",
        tag="conversations", body=CreateConversationBody, errors=(*BODY_ERRORS, 403),
        answers=(Answer(status=201, description="created", model=ConversationCreated, location=True),),
    ),
    Operation(
        method="GET", path="/v1/conversations", operation_id="listConversations", summary="The caller's conversations",
        tag="conversations", parameters=(WORKSPACE_FILTER, PAGE_LIMIT, BEFORE), errors=(400, 403),
        answers=(Answer(status=200, description="newest first", model=ConversationPage),),
    ),
    Operation(
        method="GET", path="/v1/conversations/{conversation_id}", operation_id="getConversation",
        summary="One conversation", tag="conversations", errors=(404,),
        answers=(Answer(status=200, description="the conversation", model=Conversation),),
    ),
    Operation(
        method="PATCH", path="/v1/conversations/{conversation_id}", operation_id="renameConversation",
        summary="Rename a conversation", tag="conversations", body=RenameConversationBody,
        errors=(*BODY_ERRORS, 404, 409), answers=(Answer(status=200, description="renamed", model=Conversation),),
    ),
    Operation(
        method="POST", path="/v1/conversations/{conversation_id}/turns", operation_id="submitTurn",
        summary="Submit a user turn: starts a run", tag="conversations", body=SubmitTurnBody,
        parameters=(IDEMPOTENCY_KEY,), errors=(*BODY_ERRORS, 403, 404, 409, 422),
        answers=(Answer(status=202, description="the run started; follow its stream", model=RunAccepted, location=True),),
    ),
    Operation(
        method="GET", path="/v1/conversations/{conversation_id}/turns", operation_id="listTurns",
        summary="A conversation's turns", tag="conversations", errors=(400, 404),
        parameters=(_query("afterSeq", _integer(0, MAX_INT32), "turns after this turnSeq (default 0)"), PAGE_LIMIT),
        answers=(Answer(status=200, description="oldest first", model=TurnPage),),
    ),
    Operation(
        method="POST", path="/v1/conversations/{conversation_id}/regenerate", operation_id="regenerate",
        summary="Answer the last user turn again: starts a run", tag="conversations", body=RegenerateBody,
        body_required=False, parameters=(IDEMPOTENCY_KEY,), errors=(*BODY_ERRORS, 403, 404, 409, 422),
        answers=(Answer(status=202, description="the run started", model=RunAccepted, location=True),),
    ),
    Operation(
        method="GET", path="/v1/runs/{run_id}", operation_id="getRun", summary="A run: status, progress or answer",
        tag="runs", errors=(404,), answers=(Answer(status=200, description="the run", model=Run),),
    ),
    Operation(
        method="POST", path="/v1/runs/{run_id}/cancel", operation_id="cancelRun", summary="Cancel a run", tag="runs",
        errors=(404, 409), answers=(Answer(status=202, description="it stops", model=RunCancelling),),
    ),
    Operation(
        method="GET", path="/v1/runs/{run_id}/stream", operation_id="streamRun", summary="A run's events, as SSE",
        tag="runs", errors=(400, 404, 410),
        parameters=(
            Parameter(name="Last-Event-ID", location="header", schema={"type": "string", "pattern": r"^[0-9]{1,18}$"},
                      description="resume after this event"),
            _query("lastEventId", {"type": "string", "pattern": r"^[0-9]{1,18}$"}, "the same, for clients that cannot set headers"),
        ),
        answers=(Answer(status=200, description="the run's events to its end", events=RUN_STREAM_EVENTS, events_note=RUN_STREAM_NOTE),),
    ),
    Operation(
        method="POST", path="/v1/runs/{run_id}/tool-calls/{call_id}/approval", operation_id="decideToolApproval",
        summary="Approve or decline a tool call that waits for it", tag="runs", body=ToolApprovalBody,
        errors=(*BODY_ERRORS, 404, 409),
        answers=(Answer(status=202, description="recorded; the tool loop acts on it", model=ToolApprovalAccepted),),
    ),
    Operation(
        method="POST", path="/v1/files", operation_id="uploadFile", summary="Upload a file to a workspace", tag="files",
        form=FILE_FORM, errors=(400, 403, 413, 415),
        answers=(Answer(status=201, description="stored; ingestion follows", model=File, location=True),),
    ),
    Operation(
        method="GET", path="/v1/files", operation_id="listFiles", summary="Files the caller sees", tag="files",
        parameters=(WORKSPACE_FILTER, PAGE_LIMIT, BEFORE), errors=(400, 403),
        answers=(Answer(status=200, description="newest first", model=FilePage),),
    ),
    Operation(
        method="GET", path="/v1/files/{file_id}", operation_id="getFile", summary="A file and its ingestion",
        tag="files", errors=(404,), answers=(Answer(status=200, description="the file", model=File),),
    ),
    Operation(
        method="DELETE", path="/v1/files/{file_id}", operation_id="deleteFile", summary="Delete a file (its uploader)",
        tag="files", errors=(403, 404), answers=(Answer(status=204, description="deleted"),),
    ),
    Operation(
        method="POST", path="/v1/search", operation_id="search",
        summary="Ranked passages of a workspace's documents the caller may see, without a model", tag="search",
        body=SearchBody, errors=(*BODY_ERRORS, 403, 422),
        answers=(Answer(status=200, description="best first", model=SearchResults),),
    ),
    Operation(
        method="GET", path="/v1/export", operation_id="exportData",
        summary="All the caller's conversations, turns, runs and files' metadata as one JSON document, streamed",
        tag="exports", parameters=(WORKSPACE_FILTER,), errors=(403,),
        answers=(Answer(status=200, description="the document, streamed as it is read", model=ExportDocument, headers=EXPORT_HEADERS),),
    ),
    Operation(
        method="POST", path="/v1/exports", operation_id="startExport",
        summary="Build the export in the background, with progress", tag="exports", body=StartExportBody,
        body_required=False, errors=(*BODY_ERRORS, 403, 409),
        answers=(Answer(status=202, description="started; follow its `Location`", model=Export, location=True),),
    ),
    Operation(
        method="GET", path="/v1/exports/{export_id}", operation_id="getExport",
        summary="A background export: state, progress, and once completed its download", tag="exports", errors=(404,),
        answers=(Answer(status=200, description="the export", model=Export),),
    ),
    Operation(
        method="GET", path="/v1/exports/{export_id}/download", operation_id="downloadExport",
        summary="A completed background export's document", tag="exports", errors=(404, 409),
        answers=(Answer(status=200, description="the document", model=ExportDocument, headers=EXPORT_HEADERS),),
    ),
    Operation(
        method="GET", path="/v1/usage", operation_id="getUsage", summary="The org's credits, budget and recent spend",
        tag="governance", parameters=(_query("hours", _integer(1, 744), "recent spend over this many hours (default 24)"),),
        errors=(400, 403), answers=(Answer(status=200, description="the org's usage", model=OrgUsage),),
    ),
    Operation(
        method="POST", path="/v1/admin/credits", operation_id="grantCredits", summary="Grant credits", tag="admin",
        body=GrantCreditsBody, errors=(*BODY_ERRORS, 403, 404),
        answers=(Answer(status=200, description="granted", model=CreditsGrant),),
    ),
    Operation(
        method="PUT", path="/v1/admin/budget", operation_id="setBudget", summary="Set the monthly token budget",
        tag="admin", body=BudgetBody, errors=(*BODY_ERRORS, 403, 404),
        answers=(Answer(status=200, description="set", model=BudgetChange),),
    ),
    Operation(
        method="PUT", path="/v1/admin/refill", operation_id="setRefill", summary="Set the monthly refill", tag="admin",
        body=RefillBody, errors=(*BODY_ERRORS, 403, 404),
        answers=(Answer(status=200, description="set", model=RefillChange),),
    ),
    Operation(
        method="POST", path="/v1/admin/users/{user_id}/suspension", operation_id="suspendUser",
        summary="Suspend a user", tag="admin", body=SuspensionBody, errors=(*BODY_ERRORS, 403, 404),
        answers=(Answer(status=200, description="suspended", model=Suspension),),
    ),
    Operation(
        method="DELETE", path="/v1/admin/users/{user_id}/suspension", operation_id="reinstateUser",
        summary="Reinstate a user", tag="admin", body=ReinstatementBody, body_required=False,
        errors=(*BODY_ERRORS, 403, 404), answers=(Answer(status=200, description="reinstated", model=Reinstatement),),
    ),
    Operation(
        method="POST", path="/v1/admin/erasures", operation_id="createErasure",
        summary="Erase a user of the org, or the org: destroy their data keys (docs/encryption.md)", tag="admin",
        body=ErasureBody, errors=(*BODY_ERRORS, 403, 404, 409),
        answers=(Answer(status=202, description="the keys are destroyed; derived stores drop the data shortly", model=Erasure),),
    ),
    Operation(
        method="GET", path="/v1/admin/safety-decisions", operation_id="listSafetyDecisions",
        summary="The safety stages' decisions on the org's runs", tag="admin", errors=(400, 403),
        parameters=(
            _query("since", {"type": "string", "format": "date-time"}, "from this instant (default: 24 hours before until)"),
            _query("until", {"type": "string", "format": "date-time"}, "to this instant (default: now)"),
            _query("stage", {"enum": list(SAFETY_STAGES)}),
            _query("action", {"enum": list(SAFETY_ACTIONS)}),
            _query("limit", _integer(1, 1000), "at most this many (default 100)"),
        ),
        answers=(Answer(status=200, description="newest first", model=SafetyDecisionPage),),
    ),
    Operation(
        method="GET", path="/v1/admin/analytics", operation_id="listAnalytics",
        summary="The documented analysts' queries (docs/analytics.md)", tag="admin", errors=(403,),
        answers=(Answer(status=200, description="their names and questions", model=AnalyticsQueryList),),
    ),
    Operation(
        method="GET", path="/v1/admin/analytics/{name}", operation_id="runAnalytics",
        summary="One documented query, over the caller's org only", tag="admin", errors=(403, 404),
        answers=(Answer(status=200, description="its rows, in the query's column order", model=AnalyticsAnswer),),
    ),
    Operation(
        method="POST", path="/v1/admin/api-keys", operation_id="createApiKey", summary="Create an API key (shown once)",
        tag="admin", body=CreateApiKeyBody, errors=(*BODY_ERRORS, 403),
        answers=(Answer(status=201, description="created: `key` is shown this once", model=CreatedApiKey, location=True),),
    ),
    Operation(
        method="GET", path="/v1/admin/api-keys", operation_id="listApiKeys", summary="The org's API keys (no secrets)",
        tag="admin", errors=(403,), answers=(Answer(status=200, description="newest first", model=ApiKeyList),),
    ),
    Operation(
        method="GET", path="/v1/admin/api-keys/{key_id}", operation_id="getApiKey", summary="One API key", tag="admin",
        errors=(403, 404), answers=(Answer(status=200, description="the key", model=ApiKey),),
    ),
    Operation(
        method="DELETE", path="/v1/admin/api-keys/{key_id}", operation_id="revokeApiKey",
        summary="Revoke an API key, on every instance", tag="admin", body=RevokeApiKeyBody, body_required=False,
        errors=(*BODY_ERRORS, 403, 404), answers=(Answer(status=200, description="revoked (or already was)", model=ApiKey),),
    ),
    Operation(
        method="POST", path="/v1/sessions", operation_id="createSession",
        summary="Sign a browser in with a bearer token: the session goes in cookies", tag="sessions",
        answers=(Answer(status=201, description="signed in", model=SessionCreated, location=True),),
    ),
    Operation(
        method="GET", path="/v1/sessions/current", operation_id="currentSession",
        summary="Who the caller is, by its bearer token or session cookie", tag="sessions",
        answers=(Answer(status=200, description="the caller", model=CurrentSession),),
    ),
    Operation(
        method="DELETE", path="/v1/sessions/current", operation_id="deleteSession", summary="Sign out",
        tag="sessions", public=True, errors=(403,), answers=(Answer(status=204, description="the cookies are cleared"),),
    ),
    Operation(
        method="GET", path="/openai/v1/models", operation_id="openaiListModels", summary="The served models",
        tag="openai", openai=True, answers=(Answer(status=200, description="the models", model=ModelList),),
    ),
    Operation(
        method="GET", path="/openai/v1/models/{model_id:path}", operation_id="openaiGetModel", summary="A served model",
        tag="openai", openai=True, errors=(404,), answers=(Answer(status=200, description="the model", model=ModelObject),),
    ),
    Operation(
        method="POST", path="/openai/v1/chat/completions", operation_id="openaiCreateChatCompletion",
        summary="A chat completion, whole or streamed (a new conversation and run)", tag="openai", openai=True,
        body=chat_request_schema(), parameters=WORKSPACE_HEADERS, errors=(*BODY_ERRORS, 403, 404, 409),
        answers=(Answer(
            status=200, description="the completion; `stream: true`: its chunks", model=ChatCompletion,
            events=(ChatCompletionChunk,),
            events_note="Each `data:` line is a chunk; the stream ends with `data: [DONE]`, or with `data: {\"error\": ...}`"
            " (no [DONE]) when the run failed or was cancelled.",
            events_json=False,
        ),),
    ),
    Operation(
        method="POST", path="/openai/v1/responses", operation_id="openaiCreateResponse",
        summary="A response: whole, streamed, or started in the background", tag="openai", openai=True,
        body=response_request_schema(), parameters=WORKSPACE_HEADERS, errors=(*BODY_ERRORS, 403, 404, 409),
        answers=(Answer(
            status=200, description="the response; `stream: true`: its events", model=ResponseObject,
            events=RESPONSE_STREAM_EVENTS, events_note="Each event's `event:` is its `type`; `sequence_number` counts from 0.",
        ),),
    ),
    Operation(
        method="GET", path="/openai/v1/responses/{response_id}", operation_id="openaiGetResponse",
        summary="A response as the log has it; `stream=true` replays its events", tag="openai", openai=True,
        errors=(400, 404, 410),
        parameters=(
            _query("stream", {"enum": ["true", "false"]}, empty_is_absent=False),
            _query("starting_after", _integer(-1, MAX_INT32), "replay the events after this sequence number"),
            _query("include_obfuscation", {"enum": ["false"]}, empty_is_absent=False),
        ),
        answers=(Answer(
            status=200, description="the response, or its events", model=ResponseObject, events=RESPONSE_STREAM_EVENTS,
            events_note="Each event's `event:` is its `type`; `sequence_number` counts from 0.",
        ),),
    ),
    Operation(
        method="POST", path="/openai/v1/responses/{response_id}/cancel", operation_id="openaiCancelResponse",
        summary="Cancel a response's run, then answer it", tag="openai", openai=True, errors=(404, 409),
        answers=(Answer(status=200, description="the response once its run stopped", model=ResponseObject),),
    ),
)

# Routes of api/app.py that are pages for a browser, not the API: the chat page, its static files, the sign-in link.
BROWSER_ROUTES = ("/", "/static", "/signin")

PATH_PARAMETER_SCHEMAS = {
    "user_id": RESOURCE_ID,
    "key_id": {"type": "string", "pattern": KEY_ID_PATTERN},
}


def build_document(operations: Sequence[Operation] = OPERATIONS, *, version: str = "0.1.0") -> dict:
    """The OpenAPI 3.1 document of `operations`, their models' JSON Schemas in `components.schemas`."""
    refs = _model_refs(operations)
    paths: dict[str, dict] = {}
    for operation in operations:
        paths.setdefault(_openapi_path(operation.path), {})[operation.method.lower()] = _operation(operation, refs.refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "turnlog",
            "version": version,
            "description": "turnlog's REST + SSE API (`/v1`) and its OpenAI-compatible facade (`/openai/v1`). Authenticate"
            " with `Authorization: Bearer <token>`: a token from `turnlog token`, or an API key `tlk_...` (docs/api-keys.md).",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in dict.fromkeys(operation.tag for operation in operations)],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "schemas": refs.definitions,
            "securitySchemes": {
                "bearer": {
                    "type": "http", "scheme": "bearer",
                    "description": "a JWT signed by the server's secret (`turnlog token`), an API key `tlk_<keyId>_<secret>`,"
                    " or, with single sign-on on, a token of the OIDC provider (docs/deploy.md)",
                },
                "session": {
                    "type": "apiKey", "in": "cookie", "name": "turnlog_session",
                    "description": "a browser session (`POST /v1/sessions`); writes also send `X-Turnlog-CSRF` (docs/web.md)",
                },
            },
        },
    }


@dataclass(kw_only=True)
class _Refs:
    refs: dict[tuple[type[BaseModel], str], dict] = field(default_factory=dict)
    definitions: dict[str, dict] = field(default_factory=dict)


def _model_refs(operations: Sequence[Operation]) -> _Refs:
    wanted: dict[tuple[type[BaseModel], str], None] = {(Problem, "serialization"): None, (OpenAIError, "serialization"): None}
    for operation in operations:
        if isinstance(operation.body, type):
            wanted[(operation.body, "validation")] = None
        for answer in operation.answers:
            for model in (answer.model, *answer.events):
                if model is not None:
                    wanted[(model, "serialization")] = None
    refs, top = models_json_schema(list(wanted), ref_template=REF_TEMPLATE)  # type: ignore[arg-type]
    return _Refs(refs=dict(refs), definitions=top.get("$defs", {}))


def _openapi_path(path: str) -> str:
    return "/".join(piece.split(":")[0] + "}" if piece.startswith("{") and ":" in piece else piece for piece in path.split("/"))


def _operation(operation: Operation, refs: dict) -> dict:
    shape: dict = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETER_SCHEMAS.get(name, {"type": "string"})}
        for name in operation.path_parameters
    ]
    parameters += [_parameter(parameter) for parameter in operation.parameters]
    if parameters:
        shape["parameters"] = parameters
    if operation.body is not None:
        schema = refs[(operation.body, "validation")] if isinstance(operation.body, type) else operation.body
        shape["requestBody"] = {"required": operation.body_required, "content": {JSON: {"schema": schema}}}
    elif operation.form is not None:
        shape["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": operation.form}}}
    if operation.public:
        shape["security"] = []
    responses: dict[str, dict] = {}
    for answer in operation.answers:
        responses[str(answer.status)] = _answer(answer, refs)
    errors = operation.errors if operation.public else (*AUTHENTICATED_ERRORS, *operation.errors)
    error_schema = refs[(OpenAIError, "serialization")] if operation.openai else refs[(Problem, "serialization")]
    error_media = JSON if operation.openai else PROBLEM_MEDIA_TYPE
    problem_schema = refs[(Problem, "serialization")]
    for status in sorted({*errors, *CONNECTION_ERROR_DESCRIPTIONS}):
        descriptions, content = [], {}
        if status in errors:
            descriptions.append(ERROR_DESCRIPTIONS[status])
            content[error_media] = {"schema": error_schema}
            if operation.openai and status == 404:
                # A path under /openai/v1 that no route of the facade matches is answered by the main API.
                content[PROBLEM_MEDIA_TYPE] = {"schema": problem_schema}
        if status in CONNECTION_ERROR_DESCRIPTIONS:
            descriptions.append(f"before the request reaches the API: {CONNECTION_ERROR_DESCRIPTIONS[status]}")
            content[PROBLEM_MEDIA_TYPE] = {"schema": problem_schema}
        response: dict = {"description": "; or ".join(descriptions), "content": content}
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
        responses[str(status)] = response
    shape["responses"] = responses
    return shape


def _parameter(parameter: Parameter) -> dict:
    shape = {"name": parameter.name, "in": parameter.location, "required": parameter.required, "schema": parameter.schema}
    if parameter.description:
        shape["description"] = parameter.description
    return shape


def _answer(answer: Answer, refs: dict) -> dict:
    shape: dict = {"description": answer.description}
    content: dict[str, dict] = {}
    if answer.model is not None:
        content[JSON] = {"schema": refs[(answer.model, "serialization")]}
    if answer.events:
        events = [refs[(event, "serialization")] for event in answer.events]
        payload = {"oneOf": events} if len(events) > 1 else events[0]
        data: dict = {"type": "string", "description": "one of `x-sse-data`, as JSON"}
        if answer.events_json:
            data.update(contentMediaType=JSON, contentSchema=payload)
        content[SSE_MEDIA_TYPE] = {
            # One event of the stream, as SSE parses it (OpenAPI 3.2 names this `itemSchema`; tools reading 3.1, such
            # as schemathesis, validate each event against `schema`).
            "schema": {
                "type": "object",
                "description": "Server-sent events; each event's `data:` is one of `x-sse-data`. " + answer.events_note,
                "properties": {"event": {"type": "string"}, "id": {"type": "string"}, "data": data},
                "required": ["data"],
            },
            "x-sse-data": payload,
        }
    if answer.status == 200 and answer.model is None and not answer.events:
        content[JSON] = {"schema": {"type": "object"}}
    if content:
        shape["content"] = content
    if answer.location:
        shape["headers"] = {"Location": {"required": True, "schema": {"type": "string"}, "description": "where it is"}}
    for name, description in answer.headers:
        shape.setdefault("headers", {})[name] = {"required": True, "schema": {"type": "string"}, "description": description}
    return shape


async def openapi_document(request: Request) -> JSONResponse:
    """`GET /openapi.json`: built once per application."""
    document = getattr(request.app.state, "openapi_document", None)
    if document is None:
        document = build_document()
        request.app.state.openapi_document = document
    return JSONResponse(document)
