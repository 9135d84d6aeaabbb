"""A `POST /responses` body, checked field by field, and its input folded into one turnlog turn (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from api.bodies import RESOURCE_ID_PATTERN
from api.openai.chat_request import (
    DOCS, MESSAGE_ROLES, NON_BLANK, ChatMessage, cut_into_parts, fold_messages, neutral_schemas, text_content_schema, title_of,
)
from api.openai.errors import UnsupportedParameter

UNSUPPORTED_FIELDS = (
    "context_management", "conversation", "include", "max_output_tokens", "max_tool_calls", "metadata",
    "parallel_tool_calls", "prompt", "prompt_cache_key", "reasoning", "safety_identifier", "service_tier",
    "store", "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation",
)
NEUTRAL_VALUES: Mapping[str, object] = {"store": True, "parallel_tool_calls": True, "truncation": "disabled"}
SUPPORTED_FIELDS = ("background", "input", "instructions", "model", "previous_response_id", "stream", "user")
ITEM_FIELDS = ("type", "role", "content", "id", "status")
# What a message's text parts are called: the user's `input_text`, the assistant's `output_text` (and plain `text`).
TEXT_PART_TYPES = ("input_text", "output_text", "text")
_RUN_ID = re.compile(RESOURCE_ID_PATTERN)


@dataclass(frozen=True, kw_only=True)
class ResponseRequest:
    model: str
    parts: tuple[str, ...]
    title: str
    instructions: str | None
    stream: bool
    background: bool
    previous_response_id: str | None


def parse_response_request(document: Mapping[str, object]) -> ResponseRequest:
    fields = {name: value for name, value in document.items() if value is not None}
    for name, value in fields.items():
        if name in SUPPORTED_FIELDS or (name in NEUTRAL_VALUES and value == NEUTRAL_VALUES[name]):
            continue
        if name in UNSUPPORTED_FIELDS:
            raise UnsupportedParameter(
                param=name, detail=f"'{name}' is not supported by turnlog's OpenAI-compatible API ({DOCS} lists what is)"
            )
        raise UnsupportedParameter(param=name, code="unknown_parameter", detail=f"Unrecognized request argument supplied: {name}")
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise UnsupportedParameter(param="model", code="invalid_value", detail="'model' is required: a model id from GET /models")
    flags = {}
    for name in ("stream", "background"):
        flags[name] = fields.get(name, False)
        if not isinstance(flags[name], bool):
            raise UnsupportedParameter(param=name, code="invalid_type", detail=f"'{name}' must be a boolean")
    if flags["stream"] and flags["background"]:
        raise UnsupportedParameter(
            param="background", code="invalid_value",
            detail="'background' with 'stream' is not supported: start it in the background, then GET /responses/{id}?stream=true",
        )
    instructions = fields.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise UnsupportedParameter(param="instructions", code="invalid_type", detail="'instructions' must be a string")
    previous = fields.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not _RUN_ID.fullmatch(previous)):
        raise UnsupportedParameter(
            param="previous_response_id", code="invalid_value", detail="'previous_response_id' must be a response id"
        )
    messages = _messages(fields.get("input"))
    if instructions:
        messages.insert(0, ChatMessage(role="system", text=instructions))
    return ResponseRequest(
        model=model, parts=cut_into_parts(fold_messages(messages)), title=title_of(messages[-1].text),
        instructions=instructions, stream=flags["stream"], background=flags["background"], previous_response_id=previous,
    )


def _messages(input_: object) -> list[ChatMessage]:
    if isinstance(input_, str):
        messages = [ChatMessage(role="user", text=input_)]
    elif isinstance(input_, list) and input_:
        messages = [_message(index, item) for index, item in enumerate(input_)]
    else:
        raise UnsupportedParameter(param="input", code="invalid_value", detail="'input' must be a string or a non-empty array of messages")
    last = len(messages) - 1
    if messages[-1].role != "user":
        raise UnsupportedParameter(
            param=f"input[{last}].role", code="invalid_value", detail="the last input item must be a user message"
        )
    if not messages[-1].text.strip():
        raise UnsupportedParameter(param=f"input[{last}].content", code="invalid_value", detail="the last user message has no text")
    return messages


def _message(index: int, item: object) -> ChatMessage:
    where = f"input[{index}]"
    if not isinstance(item, Mapping):
        raise UnsupportedParameter(param=where, code="invalid_type", detail=f"'{where}' must be an object")
    kind = item.get("type", "message")
    if kind != "message":
        raise UnsupportedParameter(
            param=f"{where}.type", detail=f"'{where}.type' {kind!r}: only message items are supported ({DOCS})"
        )
    for name, value in item.items():
        if name not in ITEM_FIELDS and value is not None:
            raise UnsupportedParameter(param=f"{where}.{name}", detail=f"'{where}.{name}' is not supported ({DOCS})")
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise UnsupportedParameter(
            param=f"{where}.role", code="invalid_value", detail=f"'{where}.role' must be one of {', '.join(MESSAGE_ROLES)}, got {role!r}"
        )
    content = item.get("content")
    if isinstance(content, str):
        return ChatMessage(role=str(role), text=content)
    if not isinstance(content, list):
        raise UnsupportedParameter(
            param=f"{where}.content", code="invalid_type", detail=f"'{where}.content' must be a string or an array of text parts"
        )
    texts = []
    for part_index, part in enumerate(content):
        path = f"{where}.content[{part_index}]"
        if not isinstance(part, Mapping) or part.get("type") not in TEXT_PART_TYPES:
            kind = part.get("type") if isinstance(part, Mapping) else None
            raise UnsupportedParameter(param=f"{path}.type", detail=f"'{path}.type' {kind!r}: only text parts are supported ({DOCS})")
        if not isinstance(part.get("text"), str):
            raise UnsupportedParameter(param=f"{path}.text", code="invalid_type", detail=f"'{path}.text' must be a string")
        texts.append(part["text"])
    return ChatMessage(role=str(role), text="\n".join(texts))


def response_request_schema() -> dict:
    """The JSON Schema of a `POST /responses` body, from the same tables `parse_response_request` checks."""
    item = {
        "type": "object",
        "properties": {
            "type": {"const": "message"},
            "role": {"enum": list(MESSAGE_ROLES)},
            "content": text_content_schema(TEXT_PART_TYPES),
            "id": {},
            "status": {},
        },
        "required": ["role", "content"],
        "additionalProperties": {"type": "null"},
    }
    assert set(item["properties"]) == set(ITEM_FIELDS)
    nullable_boolean = {"anyOf": [{"type": "boolean"}, {"type": "null"}]}
    properties = {
        "model": {"type": "string", "minLength": 1, "description": "a model id from `GET /models`"},
        "input": {"anyOf": [NON_BLANK, {"type": "array", "items": item, "minItems": 1, "description": "the last one the user's"}]},
        "instructions": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "stream": nullable_boolean,
        "background": nullable_boolean,
        "previous_response_id": {"anyOf": [{"type": "string", "pattern": RESOURCE_ID_PATTERN}, {"type": "null"}]},
        "user": {},
        **neutral_schemas(NEUTRAL_VALUES),
    }
    assert set(properties) == {*SUPPORTED_FIELDS, *NEUTRAL_VALUES}
    return {
        "type": "object",
        "properties": properties,
        "required": ["model", "input"],
        "additionalProperties": {"type": "null"},
        "not": {"properties": {"stream": {"const": True}, "background": {"const": True}}, "required": ["stream", "background"]},
    }
