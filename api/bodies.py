"""Request bodies: strict pydantic models, a size-capped JSON reader, and idempotency fingerprints."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails
from starlette.requests import Request

from kernel.errors import FieldError, InvalidRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_INPUT_PARTS",
    "MAX_INPUT_TEXT_CHARS",
    "MAX_TITLE_CHARS",
    "MAX_TOOLS",
    "NON_BLANK_PATTERN",
    "RESOURCE_ID_PATTERN",
    "CreateConversationBody",
    "InputPart",
    "RegenerateBody",
    "RenameConversationBody",
    "RequestBody",
    "ResourceId",
    "ResponseMode",
    "SearchBody",
    "SubmitTurnBody",
    "ToolMode",
    "field_errors_from_validation",
    "format_field_path",
    "parse_json_object",
    "read_json_body",
    "request_fingerprint",
    "validate_body",
]

# Ids that clients send or that tokens carry (workspaces, attachments, users, orgs). Narrow on
# purpose: they end up in log keys, SQL parameters and URLs.
RESOURCE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
RESOURCE_ID_RULE = "must be 1-64 characters of letters, digits, '_' or '-'"
MAX_TITLE_CHARS = 200
MAX_INPUT_PARTS = 16
MAX_INPUT_TEXT_CHARS = 32_000
MAX_ATTACHMENTS = 16
MAX_TOOLS = 64
MAX_SEARCH_QUERY_CHARS = 4_000  # a question, not a document: the keyword query reads 64 words of it anyway
MAX_SEARCH_LIMIT = 50
DEFAULT_SEARCH_LIMIT = 10
# Some character Python's `str.strip()` keeps: JSON Schema's `\S` differs from Python's idea of white space.
NON_BLANK_PATTERN = "[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"

ResourceId = Annotated[str, StringConstraints(pattern=RESOURCE_ID_PATTERN)]
ToolMode = Literal["auto", "none"]
ResponseMode = Literal["stream", "background"]


class RequestBody(BaseModel):
    """Base of every JSON body: strict types, camelCase on the wire, unknown fields rejected."""

    # strict: "1" is not an int and 1 is not a string; a client bug should fail loudly here
    # rather than be coerced into an event that lives on the log forever.
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
    )


class CreateConversationBody(RequestBody):
    """`POST /v1/conversations`."""

    workspace_id: ResourceId
    title: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TITLE_CHARS)] | None = None

    @field_validator("title")
    @classmethod
    def _blank_title_means_untitled(cls, title: str | None) -> str | None:
        return title or None


class InputPart(RequestBody):
    """One part of a user turn; text only for now, `type` leaves room for more."""

    type: Literal["text"]
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_INPUT_TEXT_CHARS)]


class SubmitTurnBody(RequestBody):
    """`POST /v1/conversations/{conversationId}/turns`."""

    input: Annotated[
        list[InputPart],
        # `contains` says in the document what the validator below checks.
        Field(
            min_length=1,
            max_length=MAX_INPUT_PARTS,
            json_schema_extra={"contains": {"properties": {"text": {"pattern": NON_BLANK_PATTERN}}}},
        ),
    ]
    attachments: Annotated[list[ResourceId], Field(max_length=MAX_ATTACHMENTS)] = []
    tool_mode: ToolMode = "auto"
    # Narrows the tools this run may use to these names (tool names follow the same rule as ids); it
    # never widens them: a name its owner may not use is simply not offered. Absent: every tool allowed.
    tools: Annotated[list[ResourceId], Field(max_length=MAX_TOOLS)] | None = None
    response_mode: ResponseMode = "stream"

    @field_validator("input")
    @classmethod
    def _some_text_is_not_blank(cls, parts: list[InputPart]) -> list[InputPart]:
        if not any(part.text.strip() for part in parts):
            raise ValueError("must contain some non-blank text")
        return parts


class SearchBody(RequestBody):
    """`POST /v1/search`: a query over one workspace's documents, optionally within some of its files."""

    workspace_id: ResourceId
    query: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SEARCH_QUERY_CHARS, pattern=NON_BLANK_PATTERN)]
    file_ids: Annotated[list[ResourceId], Field(max_length=MAX_ATTACHMENTS)] = []
    limit: Annotated[int, Field(ge=1, le=MAX_SEARCH_LIMIT)] = DEFAULT_SEARCH_LIMIT


class RenameConversationBody(RequestBody):
    """`PATCH /v1/conversations/{id}`: the new title; blank or null makes it untitled."""

    title: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TITLE_CHARS)] | None

    @field_validator("title")
    @classmethod
    def _blank_title_means_untitled(cls, title: str | None) -> str | None:
        return title or None


class RegenerateBody(RequestBody):
    """`POST .../regenerate`; every field optional, and the body itself may be absent."""

    response_mode: ResponseMode | None = None


class ToolApprovalBody(RequestBody):
    """`POST /v1/runs/{runId}/tool-calls/{callId}/approval`."""

    approve: bool
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TITLE_CHARS)] = ""


BodyModel = TypeVar("BodyModel", bound=BaseModel)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_field_path(location: Sequence[int | str]) -> str:
    """`('input', 0, 'text')` -> `input[0].text`; odd keys are quoted: `["a.b"]`."""
    path = ""
    for step in location:
        if isinstance(step, int):
            path += f"[{step}]"
        elif _IDENTIFIER.fullmatch(step):
            path += f".{step}" if path else step
        else:
            path += f"[{json.dumps(step, ensure_ascii=False)}]"
    return path


def _items(count: object) -> str:
    return "1 item" if count == 1 else f"{count} items"


def _human_message(error: ErrorDetails) -> str:
    """Pydantic's messages are written for Python developers; these are for API clients."""
    kind = error["type"]
    context = error.get("ctx", {})
    location = error["loc"]
    match kind:
        case "missing":
            return "field is required"
        case "extra_forbidden":
            return f"unknown field '{location[-1]}'" if location else "unknown field"
        case "string_type":
            return "must be a string"
        case "list_type":
            return "must be an array"
        case "model_type" | "model_attributes_type" | "dict_type":
            return "must be an object"
        case "string_too_short" if context.get("min_length") == 1:
            return "must not be empty"
        case "string_too_short":
            return f"must be at least {context.get('min_length')} characters"
        case "string_too_long":
            return f"must be at most {context.get('max_length')} characters"
        case "too_short":
            return f"must contain at least {_items(context.get('min_length'))}"
        case "too_long":
            return f"must contain at most {_items(context.get('max_length'))}"
        case "literal_error":
            return f"must be {context.get('expected')}"
        case "string_pattern_mismatch" if context.get("pattern") == RESOURCE_ID_PATTERN:
            return RESOURCE_ID_RULE
        case "string_pattern_mismatch":
            return f"must match {context.get('pattern')}"
        case "value_error":
            return str(context.get("error", error["msg"]))
    return error["msg"]


def field_errors_from_validation(error: ValidationError) -> list[FieldError]:
    return [
        FieldError(field=format_field_path(detail["loc"]), message=_human_message(detail))
        for detail in error.errors(include_url=False)
    ]


def _invalid_body(field_errors: Sequence[FieldError]) -> InvalidRequest:
    first = field_errors[0]
    more = len(field_errors) - 1
    summary = f"{first.field or 'body'}: {first.message}" + (f" (and {more} more)" if more else "")
    return InvalidRequest(detail=f"request body is invalid: {summary}", errors=field_errors)


def _reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Python keeps the last duplicate, other parsers the first: ambiguous input is refused
    # so that what we validate is what every downstream reader would see.
    document: dict[str, object] = {}
    for key, value in pairs:
        if key in document:
            raise InvalidRequest(detail=f"malformed JSON: duplicate key {json.dumps(key)}")
        document[key] = value
    return document


def _reject_non_finite(constant: str) -> object:
    raise InvalidRequest(detail=f"malformed JSON: {constant} is not valid JSON")


_WHOLE_NUMBER_DIGITS = 19  # an int64 has at most 19 digits: beyond, a number is no count or id turnlog takes


def _number(text: str) -> int | float:
    """A JSON number with a fraction or an exponent; a whole one (`3.0`, `3e2`) is that integer.

    JSON does not tell integers from other numbers (RFC 8259 section 6, JSON Schema's `integer`), and some
    clients write every number with a fraction, so `{"expiresInDays": 30.0}` is 30.
    """
    number = Decimal(text)
    whole = number.is_finite() and number == number.to_integral_value() and number.adjusted() < _WHOLE_NUMBER_DIGITS
    return int(number) if whole else float(text)


def parse_json_object(raw: bytes) -> dict[str, object]:
    """Decode a request body that must be one JSON object (pure; raises InvalidRequest)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidRequest(
            detail=f"request body is not valid UTF-8 (bad byte at offset {error.start})"
        ) from None
    # RFC 8259 section 8.1 lets a parser ignore a byte order mark; some clients send one.
    text = text.removeprefix("\ufeff")
    try:
        document = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_non_finite,
            parse_float=_number,
        )
    except json.JSONDecodeError as error:
        raise InvalidRequest(
            detail=(
                f"malformed JSON at line {error.lineno} column {error.colno}"
                f" (char {error.pos}): {error.msg}"
            )
        ) from None
    except RecursionError:
        raise InvalidRequest(detail="malformed JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidRequest(detail="request body must be a JSON object")
    return document


def validate_body(model: type[BodyModel], document: dict[str, object]) -> BodyModel:
    """Validate a decoded JSON object against a body model (pure; raises InvalidRequest)."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise _invalid_body(field_errors_from_validation(error)) from None


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        detail=f"request body exceeds the limit of {max_bytes} bytes", max_bytes=max_bytes
    )


def _declared_length(request: Request) -> int | None:
    header = request.headers.get("content-length")
    if header is None:
        return None
    if not header.strip().isascii() or not header.strip().isdigit():
        raise InvalidRequest(detail="Content-Length header must be a non-negative integer")
    return int(header)


def check_json_media_type(content_type: str | None) -> None:
    """Accept `application/json` (any case, optional `charset=utf-8`); raise otherwise."""
    if content_type is None:
        raise UnsupportedMediaType(detail="a request body needs Content-Type: application/json")
    media_type, *parameters = (piece.strip() for piece in content_type.split(";"))
    if media_type.lower() != "application/json":
        raise UnsupportedMediaType(
            detail=f"Content-Type must be application/json, got {media_type or 'nothing'}"
        )
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {"utf-8", "utf8"}:
            raise UnsupportedMediaType(detail="JSON bodies must be UTF-8 encoded")


async def _read_capped(request: Request, *, max_bytes: int) -> bytes:
    # Content-Length can be absent (chunked) or a lie, so the cap is also enforced per chunk.
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_body(
    request: Request,
    model: type[BodyModel],
    *,
    max_bytes: int,
    allow_empty: bool = False,
) -> BodyModel:
    """Read, decode and validate a JSON body; every failure is a TurnlogError leaf.

    Order of checks: declared size (413) and media type (415) before reading anything,
    then the size again while reading, then JSON syntax and validation (400). An empty body
    validates as `{}` when `allow_empty`, otherwise it is a 400.
    """
    declared_length = _declared_length(request)
    if declared_length is not None and declared_length > max_bytes:
        raise _too_large(max_bytes)
    if declared_length:
        check_json_media_type(request.headers.get("content-type"))
    raw = await _read_capped(request, max_bytes=max_bytes)
    if not raw.strip():
        if not allow_empty:
            raise InvalidRequest(detail="request body is required: send a JSON object")
        return validate_body(model, {})
    check_json_media_type(request.headers.get("content-type"))
    return validate_body(model, parse_json_object(raw))


def request_fingerprint(body: BaseModel) -> str:
    """sha256 hex of the validated body's canonical JSON (camelCase keys, defaults included).

    Computed after validation, so key order, whitespace and omitted-versus-default fields do
    not make two equivalent requests look different. Callers scope idempotency keys by
    endpoint themselves: the fingerprint does not name the model.
    """
    canonical = json.dumps(
        body.model_dump(mode="json", by_alias=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
