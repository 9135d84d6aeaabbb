"""Body validation at the edge: every rejection path, over a real Starlette app and as pure calls."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from api.bodies import (
    CreateConversationBody,
    RegenerateBody,
    SubmitTurnBody,
    format_field_path,
    parse_json_object,
    read_json_body,
    request_fingerprint,
    validate_body,
)
from api.problems import PROBLEM_MEDIA_TYPE, exception_handlers
from kernel.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

MAX_BYTES = 4096
JSON = {"Content-Type": "application/json"}


async def submit_turn(request: Request) -> Response:
    body = await read_json_body(request, SubmitTurnBody, max_bytes=MAX_BYTES)
    return JSONResponse(body.model_dump(mode="json", by_alias=True))


async def regenerate(request: Request) -> Response:
    body = await read_json_body(request, RegenerateBody, max_bytes=MAX_BYTES, allow_empty=True)
    return JSONResponse(body.model_dump(mode="json", by_alias=True))


@pytest.fixture
def client() -> TestClient:
    app = Starlette(
        routes=[
            Route("/turns", submit_turn, methods=["POST"]),
            Route("/regenerate", regenerate, methods=["POST"]),
        ],
        exception_handlers=exception_handlers,
    )
    return TestClient(app)


def turn(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {"input": [{"type": "text", "text": "Summarize the caching layer."}]}
    body.update(overrides)
    return body


def problem(response) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    return response.json()


def test_valid_turn_gets_defaults(client: TestClient) -> None:
    response = client.post("/turns", json=turn(attachments=["file_847"]))

    assert response.status_code == 200
    assert response.json() == {
        "input": [{"type": "text", "text": "Summarize the caching layer."}],
        "attachments": ["file_847"],
        "toolMode": "auto",
        "tools": None,
        "responseMode": "stream",
    }


def test_validation_errors_use_camel_case_paths_and_human_messages(client: TestClient) -> None:
    body = turn(
        input=[{"type": "text", "text": ""}, {"type": "image", "text": "x", "url": "u"}],
        toolMode="always",
        tool_mode="none",
    )

    response = client.post("/turns", json=body)

    assert response.status_code == 400
    assert problem(response)["errors"] == [
        {"field": "input[0].text", "message": "must not be empty"},
        {"field": "input[1].type", "message": "must be 'text'"},
        {"field": "input[1].url", "message": "unknown field 'url'"},
        {"field": "toolMode", "message": "must be 'auto' or 'none'"},
        {"field": "tool_mode", "message": "unknown field 'tool_mode'"},
    ]
    assert problem(response)["detail"] == "request body is invalid: input[0].text: must not be empty (and 4 more)"


def test_missing_required_field(client: TestClient) -> None:
    response = client.post("/turns", json={"attachments": []})

    assert response.status_code == 400
    assert problem(response)["errors"] == [{"field": "input", "message": "field is required"}]


def test_strict_types_do_not_coerce(client: TestClient) -> None:
    response = client.post("/turns", json=turn(input=[{"type": "text", "text": 42}], attachments="file_1"))

    assert problem(response)["errors"] == [
        {"field": "input[0].text", "message": "must be a string"},
        {"field": "attachments", "message": "must be an array"},
    ]


@pytest.mark.parametrize(
    ("overrides", "expected_error"),
    [
        ({"input": []}, {"field": "input", "message": "must contain at least 1 item"}),
        ({"input": [{"type": "text", "text": "a"}] * 17}, {"field": "input", "message": "must contain at most 16 items"}),
        ({"input": [{"type": "text", "text": "  "}, {"type": "text", "text": "\n"}]},
         {"field": "input", "message": "must contain some non-blank text"}),
        ({"input": ["just a string"]}, {"field": "input[0]", "message": "must be an object"}),
        ({"attachments": [f"f{i}" for i in range(17)]}, {"field": "attachments", "message": "must contain at most 16 items"}),
        ({"attachments": ["../etc/passwd"]},
         {"field": "attachments[0]", "message": "must be 1-64 characters of letters, digits, '_' or '-'"}),
        ({"responseMode": "later"}, {"field": "responseMode", "message": "must be 'stream' or 'background'"}),
    ],
)
def test_submit_turn_limits(overrides: dict[str, object], expected_error: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_body(SubmitTurnBody, turn(**overrides))

    assert [error.as_json() for error in caught.value.errors] == [expected_error]


def test_text_length_limit_is_32000_characters() -> None:
    validate_body(SubmitTurnBody, turn(input=[{"type": "text", "text": "x" * 32_000}]))

    with pytest.raises(InvalidRequest) as caught:
        validate_body(SubmitTurnBody, turn(input=[{"type": "text", "text": "x" * 32_001}]))

    assert caught.value.errors[0].message == "must be at most 32000 characters"


def test_content_length_over_the_limit_is_413_before_reading(client: TestClient) -> None:
    response = client.post("/turns", content=b"x" * (MAX_BYTES + 1), headers=JSON)

    assert response.status_code == 413
    body = problem(response)
    assert body["detail"] == f"request body exceeds the limit of {MAX_BYTES} bytes"
    assert body["maxBytes"] == MAX_BYTES


def test_chunked_body_over_the_limit_is_413_while_streaming(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = client.post("/turns", content=chunks(), headers=JSON)

    assert response.status_code == 413


def test_body_without_json_content_type_is_415(client: TestClient) -> None:
    response = client.post("/turns", content=json.dumps(turn()), headers={"Content-Type": "text/plain"})

    assert response.status_code == 415
    assert problem(response)["detail"] == "Content-Type must be application/json, got text/plain"


def test_body_without_any_content_type_is_415(client: TestClient) -> None:
    response = client.post("/turns", content=json.dumps(turn()))

    assert response.status_code == 415


def test_content_type_parameters_and_case_are_accepted(client: TestClient) -> None:
    response = client.post(
        "/turns", content=json.dumps(turn()), headers={"Content-Type": "Application/JSON; charset=UTF-8"}
    )

    assert response.status_code == 200


def test_non_utf8_charset_is_415(client: TestClient) -> None:
    response = client.post(
        "/turns", content=json.dumps(turn()), headers={"Content-Type": "application/json; charset=latin-1"}
    )

    assert response.status_code == 415


def test_malformed_json_reports_the_position(client: TestClient) -> None:
    response = client.post("/turns", content=b'{"input": [}', headers=JSON)

    assert response.status_code == 400
    assert problem(response)["detail"] == "malformed JSON at line 1 column 12 (char 11): Expecting value"


def test_json_that_is_not_an_object_is_400(client: TestClient) -> None:
    response = client.post("/turns", content=b"[1, 2]", headers=JSON)

    assert response.status_code == 400
    assert problem(response)["detail"] == "request body must be a JSON object"


def test_empty_body_is_400_where_a_body_is_required(client: TestClient) -> None:
    response = client.post("/turns")

    assert response.status_code == 400
    assert problem(response)["detail"] == "request body is required: send a JSON object"


def test_empty_body_is_fine_where_the_model_allows_it(client: TestClient) -> None:
    response = client.post("/regenerate")

    assert response.status_code == 200
    assert response.json() == {"responseMode": None}


def test_optional_body_is_still_validated_when_present(client: TestClient) -> None:
    assert client.post("/regenerate", json={"responseMode": "background"}).json() == {"responseMode": "background"}
    assert client.post("/regenerate", json={"model": "gpt"}).status_code == 400


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b'{"a": 1, "a": 2}', 'malformed JSON: duplicate key "a"'),
        (b'{"a": NaN}', "malformed JSON: NaN is not valid JSON"),
        (b"\xff\xfe{}", "request body is not valid UTF-8 (bad byte at offset 0)"),
        (b"[" * 50_000, "malformed JSON: nested too deeply"),
    ],
)
def test_ambiguous_or_hostile_json_is_rejected(raw: bytes, detail: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_json_object(raw)

    assert caught.value.detail == detail


def test_byte_order_mark_is_tolerated() -> None:
    assert parse_json_object("\ufeff{}".encode()) == {}


def test_create_conversation_title_is_stripped_and_blank_means_none() -> None:
    body = validate_body(CreateConversationBody, {"workspaceId": "ws_123", "title": "  Release planning "})
    untitled = validate_body(CreateConversationBody, {"workspaceId": "ws_123", "title": "   "})

    assert body.workspace_id == "ws_123" and body.title == "Release planning"
    assert untitled.title is None


def test_create_conversation_rejections() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_body(CreateConversationBody, {"workspaceId": "ws 1", "title": "t" * 201})

    assert [error.as_json() for error in caught.value.errors] == [
        {"field": "workspaceId", "message": "must be 1-64 characters of letters, digits, '_' or '-'"},
        {"field": "title", "message": "must be at most 200 characters"},
    ]


def test_snake_case_names_are_not_accepted_on_the_wire() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_body(CreateConversationBody, {"workspace_id": "ws_1"})

    assert {error.field for error in caught.value.errors} == {"workspaceId", "workspace_id"}


def test_fingerprint_ignores_key_order_whitespace_and_explicit_defaults() -> None:
    short = validate_body(SubmitTurnBody, parse_json_object(b'{"input":[{"type":"text","text":"hi"}]}'))
    spelled_out = validate_body(
        SubmitTurnBody,
        parse_json_object(
            b'{ "responseMode": "stream", "toolMode": "auto", "attachments": [],'
            b' "input": [ {"text": "hi", "type": "text"} ] }'
        ),
    )

    assert request_fingerprint(short) == request_fingerprint(spelled_out)
    assert len(request_fingerprint(short)) == 64


def test_fingerprint_changes_with_any_meaningful_field() -> None:
    base = validate_body(SubmitTurnBody, turn())
    variants = [
        validate_body(SubmitTurnBody, turn(toolMode="none")),
        validate_body(SubmitTurnBody, turn(responseMode="background")),
        validate_body(SubmitTurnBody, turn(attachments=["f1"])),
        validate_body(SubmitTurnBody, turn(input=[{"type": "text", "text": "Something else"}])),
    ]

    fingerprints = {request_fingerprint(body) for body in [base, *variants]}

    assert len(fingerprints) == 5


@pytest.mark.parametrize(
    ("location", "path"),
    [
        (("input", 0, "text"), "input[0].text"),
        (("attachments", 3), "attachments[3]"),
        (("weird.key",), '["weird.key"]'),
        ((), ""),
    ],
)
def test_format_field_path(location: tuple[int | str, ...], path: str) -> None:
    assert format_field_path(location) == path


def raw_request(*, headers: dict[str, str], chunks: list[bytes]) -> Request:
    """A request whose Content-Length can disagree with what actually arrives."""
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
    }
    return Request(scope, receive)


async def test_lying_content_length_is_still_capped() -> None:
    request = raw_request(
        headers={"content-type": "application/json", "content-length": "10"},
        chunks=[b"{" + b" " * 3000, b" " * 3000 + b"}"],
    )

    with pytest.raises(PayloadTooLarge):
        await read_json_body(request, RegenerateBody, max_bytes=MAX_BYTES)


async def test_declared_body_with_wrong_type_is_415_before_reading() -> None:
    request = raw_request(headers={"content-type": "text/plain", "content-length": "2"}, chunks=[])

    # receive() would fail on an empty queue: the check must not touch the body.
    with pytest.raises(UnsupportedMediaType):
        await read_json_body(request, RegenerateBody, max_bytes=MAX_BYTES, allow_empty=True)


async def test_invalid_content_length_is_400() -> None:
    request = raw_request(headers={"content-length": "ten"}, chunks=[b""])

    with pytest.raises(InvalidRequest, match="Content-Length"):
        await read_json_body(request, RegenerateBody, max_bytes=MAX_BYTES, allow_empty=True)


def test_a_whole_number_written_with_a_fraction_is_that_integer() -> None:
    """JSON (and JSON Schema's `integer`) does not tell 30 from 30.0; a strict int field takes both (schemathesis)."""
    document = parse_json_object(b'{"a": 30.0, "b": 3e2, "c": 1.5, "d": 1e400, "e": -0.0}')
    assert document == {"a": 30, "b": 300, "c": 1.5, "d": float("inf"), "e": 0}
    assert isinstance(document["a"], int) and isinstance(document["c"], float)
