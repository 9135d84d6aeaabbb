"""The OpenAPI document: valid OpenAPI 3.1, one operation for every route of api/app.py (and none for a route that
is gone), and every presenter's shape valid against the schema the document gives it."""

from __future__ import annotations

from datetime import UTC, datetime

import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from api.app import ROUTES
from api.files import file_json
from api.openai import completions
from api.openai.chat_request import chat_request_schema, parse_chat_request
from api.openai.errors import UnsupportedParameter, error_json
from api.openai.models import ServedModel, model_json
from api.openai.response_objects import ResponseEvents, ResponseState
from api.openai.response_request import response_request_schema
from api.openapi import BROWSER_ROUTES, CONNECTION_ERROR_DESCRIPTIONS, OPERATIONS, build_document
from api.presenters import conversation_json, run_finished_json, run_json, turn_json
from api.safety_review import decision_json
from events.runs import AssistantDelta, GenerationStarted, RunFinished, RunStarted
from events.values import Usage
from projections.read_models import ConversationRow, FileView, RunRow, TurnRow
from projections.safety_decisions import SafetyDecisionRow

T0 = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def document() -> dict:
    return build_document()


def conforms(document: dict, schema: dict, instance: object) -> None:
    """`instance` is valid against `schema`, whose `$ref`s point into the document's components."""
    validator = jsonschema.Draft202012Validator({"components": document["components"], **schema})
    errors = sorted(validator.iter_errors(instance), key=lambda error: error.path)
    assert not errors, "\n".join(f"{list(error.path)}: {error.message}" for error in errors)


def component(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of every route of api/app.py, mounts expanded; the browser's pages left out."""
    found = set()
    for route in ROUTES:
        if isinstance(route, Mount):
            if route.path in BROWSER_ROUTES:
                continue
            for inner in route.routes:
                assert isinstance(inner, Route)
                found |= {(method, route.path + inner.path) for method in inner.methods or () if method != "HEAD"}
        elif isinstance(route, Route) and route.path not in BROWSER_ROUTES:
            found |= {(method, route.path) for method in route.methods or () if method != "HEAD"}
    return found


def test_the_document_is_valid_openapi_3_1(document: dict) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_is_in_the_document_and_every_operation_is_a_route(document: dict) -> None:
    documented = {(operation.method, operation.path) for operation in OPERATIONS}
    routes = app_routes()
    assert routes - documented == set(), "routes of api/app.py missing from api/openapi.py's OPERATIONS"
    assert documented - routes == set(), "operations in api/openapi.py that api/app.py does not route"
    paths = document["paths"]
    for method, path in routes:
        assert method.lower() in paths[path.replace(":path}", "}")], (method, path)


def test_every_operation_documents_its_errors_as_problems_or_openai_errors(document: dict) -> None:
    connection = {str(status) for status in CONNECTION_ERROR_DESCRIPTIONS}  # answered before any route, as problems
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    media = set(response["content"])
                    if not path.startswith("/openai/"):
                        assert media == {"application/problem+json"}, (method, path, status)
                    elif status in connection or status == "404":  # 404: a path the facade does not route
                        assert "application/problem+json" in media, (method, path, status)
                        assert media <= {"application/json", "application/problem+json"}, (method, path, status)
                    else:
                        assert media == {"application/json"}, (method, path, status)
            assert connection <= set(operation["responses"]), (method, path)
            if operation.get("security") != []:
                assert {"401", "429", "503"} <= set(operation["responses"]), (method, path)


def test_streams_describe_their_events(document: dict) -> None:
    stream = document["paths"]["/v1/runs/{run_id}/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    names = {ref["$ref"].rsplit("/", 1)[1] for ref in stream["x-sse-data"]["oneOf"]}
    assert {"RunStartedEvent", "AssistantDeltaEvent", "RunEndedEvent", "ToolApprovalRequiredEvent"} <= names
    chat = document["paths"]["/openai/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}


# --- every presenter's shape, against the document ----------------------------------------------------------


def test_conversation_turn_and_run_presenters_conform(document: dict) -> None:
    conversation = ConversationRow(org_id="o", workspace_id="w", owner_id="u", conversation_id="conv_1", title="", created_at=T0, version=1)
    conforms(document, component("Conversation"), conversation_json(conversation))
    conforms(document, component("Conversation"), conversation_json(conversation, latest_turn_seq=4))
    user_turn = TurnRow(
        org_id="o", workspace_id="w", owner_id="u", conversation_id="conv_1", turn_seq=1, role="user", state="completed",
        content=[{"type": "text", "text": "hi"}], created_at=T0, version=2,
    )
    answer = TurnRow(
        org_id="o", workspace_id="w", owner_id="u", conversation_id="conv_1", turn_seq=2, role="assistant", state="failed",
        content=[], parent_turn_seq=1, run_id="run_1", reason="interrupted",
        citations=[{"marker": 1, "sourceId": "file_1", "chunkId": "file_1:0", "title": "T", "location": "page 1", "quote": "q"}],
        sources=[{"marker": 1, "sourceId": "file_1", "chunkId": "file_1:0", "title": "T", "location": ""}],
        tool_calls=[{"callId": "c1", "toolName": "search", "status": "ok", "attempts": 1, "durationMs": 12}],
        created_at=T0, version=3,
    )
    for turn in (user_turn, answer):
        conforms(document, component("Turn"), turn_json(turn))
    run = RunRow(
        org_id="o", workspace_id="w", owner_id="u", run_id="run_1", conversation_id="conv_1", turn_seq=2, mode="interactive",
        status="failed", reason="interrupted", created_at=T0, finished_at=T0, version=3,
    )
    conforms(document, component("Run"), run_json(run))
    for finished in (
        RunFinished(run_id="run_1", conversation_id="conv_1", turn_seq=2, status="completed", usage=Usage(prompt_tokens=3)),
        RunFinished(run_id="run_1", conversation_id="conv_1", turn_seq=2, status="failed", reason="r", usage=Usage(), text="safe"),
    ):
        event_type, shape = run_finished_json(finished)
        conforms(document, component("RunEndedEvent"), shape)
        assert shape["type"] == event_type


def test_file_and_safety_decision_presenters_conform(document: dict) -> None:
    view = FileView(
        org_id="o", workspace_id="w", owner_id="u", file_id="file_1", acl="owner", filename="a.pdf",
        media_type="application/pdf", size=10, digest="d", created_at=T0, state="failed", pages=0, chunks_total=0,
        chunks_indexed=0, title="A", failure_reason="encrypted",
    )
    conforms(document, component("File"), file_json(view))
    decision = SafetyDecisionRow(
        org_id="o", workspace_id="w", user_id="u", run_id="run_1", conversation_id="conv_1", turn_seq=1, event_id="e",
        stage="input", action="flag", subject="", category_names=["hate"], category_scores=[0.25], triggered=["hate"],
        classifiers=["profanity"], signals=[], failures=[], fail_mode="", policy_id="p", policy_version="1", reason="r",
        decided_at=T0,
    )
    conforms(document, component("SafetyDecisionItem"), decision_json(decision))


def test_the_facades_objects_conform(document: dict) -> None:
    conforms(document, component("ModelObject"), model_json(ServedModel(model_id="interactive", pool="interactive")))
    completion = completions.Completion(completion_id="chatcmpl-run_1", created=1, model="interactive")
    finished = RunFinished(run_id="run_1", conversation_id="c", turn_seq=2, status="completed", usage=Usage(output_tokens=2))
    conforms(document, component("ChatCompletion"), completions.chat_completion(completion, text="hi", finished=finished))
    for chunk in (
        completions.chunk(completion, delta={"role": "assistant", "content": ""}, include_usage=True),
        completions.chunk(completion, delta={}, finish_reason="stop"),
        completions.usage_chunk(completion, finished.usage),
    ):
        conforms(document, component("ChatCompletionChunk"), chunk)
    conforms(document, component("OpenAIError"), error_json(message="m", error_type="invalid_request_error", param="p", code="c"))

    events_schema = document["paths"]["/openai/v1/responses"]["post"]["responses"]["200"]["content"]["text/event-stream"]["x-sse-data"]
    for status, finished in (
        ("completed", finished),
        ("failed", RunFinished(run_id="run_1", conversation_id="c", turn_seq=2, status="failed", reason="x", usage=Usage())),
        ("incomplete", RunFinished(run_id="run_1", conversation_id="c", turn_seq=2, status="completed", usage=Usage(), text="safe")),
    ):
        state = ResponseState(response_id="run_1", model="interactive", created_at=1, instructions="be brief")
        conforms(document, component("ResponseObject"), state.json())
        builder = ResponseEvents(state)
        events = [
            event
            for payload in (
                RunStarted(run_id="run_1", conversation_id="c", turn_seq=2),
                GenerationStarted(run_id="run_1", worker_id="w", pool="interactive"),
                AssistantDelta(run_id="run_1", index=0, text="hi"),
                finished,
            )
            for event in builder.on(payload)
        ]
        for event in events:
            conforms(document, events_schema, event)
        assert state.status == status
        conforms(document, component("ResponseObject"), state.json())


# --- the facade's request schemas say what its parsers accept ------------------------------------------------


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
    {"model": "m", "messages": [{"role": "user", "content": "hi", "name": None}], "stream": True, "stream_options": {"include_usage": True}, "n": 1},
])
def test_chat_bodies_the_schema_accepts_the_parser_accepts(document: dict, body: dict) -> None:
    conforms(document, chat_request_schema(), body)
    parse_chat_request(body)


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5},
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}},
    {"model": "m", "messages": []},
    {"model": "", "messages": [{"role": "user", "content": "hi"}]},
])
def test_chat_bodies_the_schema_refuses_the_parser_refuses(body: dict) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, chat_request_schema(), cls=jsonschema.Draft202012Validator)
    with pytest.raises(UnsupportedParameter):
        parse_chat_request(body)


def test_the_response_schema_refuses_stream_with_background() -> None:
    schema = response_request_schema()
    jsonschema.validate({"model": "m", "input": "hi", "stream": True}, schema, cls=jsonschema.Draft202012Validator)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"model": "m", "input": "hi", "stream": True, "background": True}, schema, cls=jsonschema.Draft202012Validator)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"model": "m", "input": " \t"}, schema, cls=jsonschema.Draft202012Validator)
