"""A `POST /chat/completions` body, checked field by field, and its messages folded into one turnlog turn (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from api.bodies import MAX_INPUT_PARTS, MAX_INPUT_TEXT_CHARS, NON_BLANK_PATTERN
from api.openai.errors import UnsupportedParameter

DOCS = "docs/openai.md"

# OpenAI's fields that turnlog does not implement: refused by name rather than silently ignored. A field sent as
# null is taken as not sent; those in NEUTRAL_VALUES are accepted at the value that asks for nothing.
UNSUPPORTED_FIELDS = (
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs", "max_completion_tokens",
    "max_tokens", "metadata", "modalities", "n", "parallel_tool_calls", "prediction", "presence_penalty",
    "prompt_cache_key", "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier", "stop",
    "store", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "verbosity", "web_search_options",
)
NEUTRAL_VALUES: Mapping[str, object] = {"n": 1, "logprobs": False, "store": False, "parallel_tool_calls": True}
SUPPORTED_FIELDS = ("messages", "model", "stream", "stream_options", "user")
MESSAGE_ROLES = ("system", "developer", "user", "assistant")
MESSAGE_FIELDS = ("role", "content", "name")
STREAM_OPTIONS = ("include_usage",)


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    model: str
    parts: tuple[str, ...]  # the turn's text, cut into parts the turn body accepts
    title: str  # the new conversation's title: the start of the last user message
    stream: bool
    include_usage: bool


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    role: str
    text: str
    name: str | None = None


def parse_chat_request(document: Mapping[str, object]) -> ChatRequest:
    """The request, or UnsupportedParameter naming the first field it cannot honour."""
    fields = {name: value for name, value in document.items() if value is not None}
    for name, value in fields.items():
        if name in SUPPORTED_FIELDS:
            continue
        if name in NEUTRAL_VALUES and value == NEUTRAL_VALUES[name]:
            continue
        if name in UNSUPPORTED_FIELDS:
            raise UnsupportedParameter(
                param=name, detail=f"'{name}' is not supported by turnlog's OpenAI-compatible API ({DOCS} lists what is)"
            )
        raise UnsupportedParameter(
            param=name, code="unknown_parameter", detail=f"Unrecognized request argument supplied: {name}"
        )
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise UnsupportedParameter(param="model", code="invalid_value", detail="'model' is required: a model id from GET /models")
    stream = fields.get("stream", False)
    if not isinstance(stream, bool):
        raise UnsupportedParameter(param="stream", code="invalid_type", detail="'stream' must be a boolean")
    include_usage = _include_usage(fields.get("stream_options"), stream=stream)
    user = fields.get("user")
    if user is not None and not isinstance(user, str):
        raise UnsupportedParameter(param="user", code="invalid_type", detail="'user' must be a string")
    messages = parse_messages(fields.get("messages"))
    text = fold_messages(messages)
    return ChatRequest(
        model=model, parts=cut_into_parts(text), title=title_of(messages[-1].text), stream=stream, include_usage=include_usage
    )


def _include_usage(options: object, *, stream: bool) -> bool:
    if options is None:
        return False
    if not stream:
        raise UnsupportedParameter(
            param="stream_options", code="invalid_value", detail="'stream_options' is only allowed when 'stream' is true"
        )
    if not isinstance(options, Mapping):
        raise UnsupportedParameter(param="stream_options", code="invalid_type", detail="'stream_options' must be an object")
    for name in options:
        if name not in STREAM_OPTIONS:
            raise UnsupportedParameter(
                param=f"stream_options.{name}", detail=f"'stream_options.{name}' is not supported ({DOCS})"
            )
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise UnsupportedParameter(
            param="stream_options.include_usage", code="invalid_type", detail="'stream_options.include_usage' must be a boolean"
        )
    return include_usage


def parse_messages(messages: object) -> list[ChatMessage]:
    if not isinstance(messages, list) or not messages:
        raise UnsupportedParameter(param="messages", code="invalid_value", detail="'messages' must be a non-empty array")
    parsed = [_parse_message(index, message) for index, message in enumerate(messages)]
    if parsed[-1].role != "user":
        raise UnsupportedParameter(
            param=f"messages[{len(parsed) - 1}].role", code="invalid_value",
            detail="the last message must be the user's: turnlog answers a user turn, it cannot continue an assistant message",
        )
    if not parsed[-1].text.strip():
        raise UnsupportedParameter(
            param=f"messages[{len(parsed) - 1}].content", code="invalid_value", detail="the last user message has no text"
        )
    return parsed


def _parse_message(index: int, message: object) -> ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(message, Mapping):
        raise UnsupportedParameter(param=where, code="invalid_type", detail=f"'{where}' must be an object")
    role = message.get("role")
    if role in ("tool", "function"):
        raise UnsupportedParameter(
            param=f"{where}.role", detail=f"'{where}.role' {role!r}: tool and function messages are not supported ({DOCS})"
        )
    if role not in MESSAGE_ROLES:
        raise UnsupportedParameter(
            param=f"{where}.role", code="invalid_value",
            detail=f"'{where}.role' must be one of {', '.join(MESSAGE_ROLES)}, got {role!r}",
        )
    for name, value in message.items():
        if name not in MESSAGE_FIELDS and value is not None:
            raise UnsupportedParameter(param=f"{where}.{name}", detail=f"'{where}.{name}' is not supported ({DOCS})")
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise UnsupportedParameter(param=f"{where}.name", code="invalid_type", detail=f"'{where}.name' must be a string")
    return ChatMessage(role=str(role), text=_text_of(where, message.get("content")), name=name)


def _text_of(where: str, content: object) -> str:
    """A string, or an array of text parts (joined with newlines); any other kind of part is refused by its path."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise UnsupportedParameter(
            param=f"{where}.content", code="invalid_type", detail=f"'{where}.content' must be a string or an array of text parts"
        )
    texts = []
    for index, part in enumerate(content):
        path = f"{where}.content[{index}]"
        if not isinstance(part, Mapping):
            raise UnsupportedParameter(param=path, code="invalid_type", detail=f"'{path}' must be an object")
        if part.get("type") != "text":
            raise UnsupportedParameter(
                param=f"{path}.type", detail=f"'{path}.type' {part.get('type')!r}: only text parts are supported ({DOCS})"
            )
        if not isinstance(part.get("text"), str):
            raise UnsupportedParameter(param=f"{path}.text", code="invalid_type", detail=f"'{path}.text' must be a string")
        texts.append(part["text"])
    return "\n".join(texts)


def fold_messages(messages: Sequence[ChatMessage]) -> str:
    """One message: its text as it is. More: a transcript of them all, labelled by role, the last user message last.

    turnlog builds a conversation turn by turn from its own runs, so earlier messages cannot become turns of
    their own: the model reads them as this one turn's text.
    """
    if len(messages) == 1:
        return messages[0].text
    sections = [f"[{_label(message)}]\n{message.text}" for message in messages]
    return "The conversation so far, as a transcript; answer its last user message.\n\n" + "\n\n".join(sections)


def _label(message: ChatMessage) -> str:
    return f"{message.role} {message.name}" if message.name else message.role


def cut_into_parts(text: str) -> tuple[str, ...]:
    parts = tuple(text[start:start + MAX_INPUT_TEXT_CHARS] for start in range(0, len(text), MAX_INPUT_TEXT_CHARS))
    if len(parts) > MAX_INPUT_PARTS:
        raise UnsupportedParameter(
            param="messages", code="context_length_exceeded",
            detail=f"the messages come to {len(text)} characters; at most {MAX_INPUT_PARTS * MAX_INPUT_TEXT_CHARS} are accepted",
        )
    return parts


def title_of(text: str) -> str:
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return first_line[:80] or "OpenAI chat completion"


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


# Text, as the last user message must have: at least one character that is not white space.
NON_BLANK = {"type": "string", "pattern": NON_BLANK_PATTERN}


def text_content_schema(part_types: Sequence[str]) -> dict:
    """A message's `content`: a string, or an array of text parts of `part_types`."""
    part = {"type": "object", "properties": {"type": {"enum": list(part_types)}, "text": {"type": "string"}}, "required": ["type", "text"]}
    return {"anyOf": [{"type": "string"}, {"type": "array", "items": part}]}


def neutral_schemas(neutral: Mapping[str, object]) -> dict[str, dict]:
    """Fields accepted only at the value that asks for nothing (or null)."""
    return {name: _nullable({"const": value}) for name, value in neutral.items()}


def chat_request_schema() -> dict:
    """The JSON Schema of a `POST /chat/completions` body, from the same tables `parse_chat_request` checks.

    Unknown or unsupported fields are refused by name unless sent as null, hence `additionalProperties: null`.
    What a schema cannot say is checked too: the last message must be the user's, with some text.
    """
    message = {
        "type": "object",
        "properties": {
            "role": {"enum": list(MESSAGE_ROLES)},
            "content": text_content_schema(("text",)),
            "name": _nullable({"type": "string"}),
        },
        "required": ["role", "content"],
        "additionalProperties": {"type": "null"},
    }
    assert set(message["properties"]) == set(MESSAGE_FIELDS)
    properties = {
        "model": {"type": "string", "minLength": 1, "description": "a model id from `GET /models`"},
        "messages": {"type": "array", "items": message, "minItems": 1, "description": "the last one the user's"},
        "stream": _nullable({"type": "boolean"}),
        "stream_options": _nullable({
            "type": "object", "properties": {"include_usage": {"type": "boolean"}}, "additionalProperties": False,
        }),
        "user": _nullable({"type": "string"}),
        **neutral_schemas(NEUTRAL_VALUES),
    }
    assert set(properties) == {*SUPPORTED_FIELDS, *NEUTRAL_VALUES}
    return {
        "type": "object",
        "properties": properties,
        "required": ["model", "messages"],
        "additionalProperties": {"type": "null"},
        # `stream_options` only with `stream: true`.
        "dependentSchemas": {"stream_options": {"anyOf": [
            {"properties": {"stream_options": {"type": "null"}}},
            {"properties": {"stream": {"const": True}}, "required": ["stream"]},
        ]}},
    }
