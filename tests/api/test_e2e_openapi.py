"""The document against real answers: a live server driven through each kind of operation, every answer (and every
SSE event's data) validated against what /openapi.json says of that operation and status.

schemathesis (tests/api/test_schemathesis.py) fuzzes every operation but rarely gets past a 404 or a 403; this
walks the successful paths, streams included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import jsonschema
import pytest

import e2e_server as e2e
from kernel.sse import iter_sse

MODEL = "interactive"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e.TurnlogServer]:
    server = e2e.TurnlogServer(data_dir=tmp_path_factory.mktemp("openapi") / "data", answer_tokens=6)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Document:
    def __init__(self, document: dict) -> None:
        self.document = document

    def _validate(self, schema: dict, instance: object, where: str) -> None:
        validator = jsonschema.Draft202012Validator({"components": self.document["components"], **schema})
        errors = list(validator.iter_errors(instance))
        assert not errors, f"{where}: " + "; ".join(f"{list(error.path)}: {error.message}" for error in errors[:5])

    def check(self, response: httpx.Response, method: str, path: str) -> None:
        """The answer's status is documented for the operation, and its body valid against that status's schema."""
        operation = self.document["paths"][path][method.lower()]
        status = str(response.status_code)
        assert status in operation["responses"], f"{method} {path}: undocumented {status}: {response.text[:300]}"
        content = operation["responses"][status].get("content", {})
        if not content:
            assert not response.content, f"{method} {path} {status} has a body the document does not give it"
            return
        media = response.headers["content-type"].split(";")[0].strip()
        assert media in content, f"{method} {path} {status}: {media} not in {list(content)}"
        if media != "text/event-stream":
            self._validate(content[media]["schema"], response.json(), f"{method} {path} {status}")

    def check_events(self, response: httpx.Response, method: str, path: str, events: list[dict]) -> None:
        self.check(response, method, path)
        schema = self.document["paths"][path][method.lower()]["responses"]["200"]["content"]["text/event-stream"]["x-sse-data"]
        assert events
        for event in events:
            self._validate(schema, event, f"{method} {path} event {event.get('type')}")


async def stream_events(client: httpx.AsyncClient, method: str, url: str, **kwargs) -> tuple[httpx.Response, list[dict]]:
    async with client.stream(method, url, **kwargs) as response:
        events = []
        if response.status_code == 200:
            async for event in iter_sse(response.aiter_lines()):
                if event.data and event.data != "[DONE]":
                    events.append(json.loads(event.data))
        else:
            await response.aread()
    return response, events


async def test_every_kind_of_answer_matches_the_document(server: e2e.TurnlogServer) -> None:
    admin = server.new_user(role="admin")
    async with admin.client() as client:
        fetched = await client.get("/openapi.json", headers={"Authorization": ""})
        assert fetched.status_code == 200
        doc = Document(fetched.json())
        doc.check(await client.get("/healthz"), "GET", "/healthz")

        created = await client.post("/v1/conversations", json={"workspaceId": admin.workspace, "title": "doc"})
        doc.check(created, "POST", "/v1/conversations")
        conversation_id = created.json()["conversationId"]
        path = f"/v1/conversations/{conversation_id}"
        doc.check(await client.get(path), "GET", "/v1/conversations/{conversation_id}")
        doc.check(await client.patch(path, json={"title": "renamed"}), "PATCH", "/v1/conversations/{conversation_id}")
        doc.check(await client.get("/v1/conversations", params={"limit": 5}), "GET", "/v1/conversations")

        accepted = await client.post(f"{path}/turns", json={"input": e2e.text_input("hello document")})
        doc.check(accepted, "POST", "/v1/conversations/{conversation_id}/turns")
        run_id = accepted.json()["runId"]
        streamed, events = await stream_events(client, "GET", f"/v1/runs/{run_id}/stream")
        doc.check_events(streamed, "GET", "/v1/runs/{run_id}/stream", events)
        assert {event["type"] for event in events} >= {"run.started", "assistant.delta", "assistant.completed"}
        doc.check(await client.get(f"{path}/turns"), "GET", "/v1/conversations/{conversation_id}/turns")
        run = await client.get(f"/v1/runs/{run_id}")
        doc.check(run, "GET", "/v1/runs/{run_id}")
        assert "result" in run.json()
        doc.check(await client.post(f"/v1/runs/{run_id}/cancel"), "POST", "/v1/runs/{run_id}/cancel")
        regenerated = await client.post(f"{path}/regenerate")
        doc.check(regenerated, "POST", "/v1/conversations/{conversation_id}/regenerate")
        await e2e.wait_for_run(client, regenerated.json()["runId"])

        uploaded = await client.post(
            "/v1/files", data={"workspaceId": admin.workspace}, files={"file": ("notes.txt", b"turnlog keeps a log.", "text/plain")}
        )
        doc.check(uploaded, "POST", "/v1/files")
        file_id = uploaded.json()["fileId"]
        doc.check(await client.get(f"/v1/files/{file_id}"), "GET", "/v1/files/{file_id}")
        doc.check(await client.get("/v1/files"), "GET", "/v1/files")
        doc.check(await client.delete(f"/v1/files/{file_id}"), "DELETE", "/v1/files/{file_id}")

        doc.check(await client.get("/v1/usage"), "GET", "/v1/usage")
        doc.check(await client.get("/v1/admin/safety-decisions"), "GET", "/v1/admin/safety-decisions")
        doc.check(await client.post("/v1/admin/credits", json={"units": 5, "reason": "r"}), "POST", "/v1/admin/credits")

        key = await client.post("/v1/admin/api-keys", json={"workspaceIds": [admin.workspace]})
        doc.check(key, "POST", "/v1/admin/api-keys")
        key_id = key.json()["keyId"]
        doc.check(await client.get("/v1/admin/api-keys"), "GET", "/v1/admin/api-keys")
        doc.check(await client.get(f"/v1/admin/api-keys/{key_id}"), "GET", "/v1/admin/api-keys/{key_id}")
        doc.check(await client.delete(f"/v1/admin/api-keys/{key_id}"), "DELETE", "/v1/admin/api-keys/{key_id}")
        erasure = await client.post("/v1/admin/erasures", json={"userId": e2e.unique("user")})  # someone with no data
        assert erasure.status_code == 202, erasure.text
        doc.check(erasure, "POST", "/v1/admin/erasures")

        doc.check(await client.get("/v1/sessions/current"), "GET", "/v1/sessions/current")

        # Errors: problem+json with their members.
        doc.check(await client.get("/v1/conversations/conv_missing"), "GET", "/v1/conversations/{conversation_id}")
        doc.check(await client.post("/v1/conversations", json={"workspaceId": 7}), "POST", "/v1/conversations")
        doc.check(await client.get("/v1/conversations", headers={"Authorization": "Bearer nope"}), "GET", "/v1/conversations")

        # The facade.
        doc.check(await client.get("/openai/v1/models"), "GET", "/openai/v1/models")
        doc.check(await client.get(f"/openai/v1/models/{MODEL}"), "GET", "/openai/v1/models/{model_id}")
        doc.check(await client.get("/openai/v1/models/nope"), "GET", "/openai/v1/models/{model_id}")
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        doc.check(await client.post("/openai/v1/chat/completions", json=chat), "POST", "/openai/v1/chat/completions")
        doc.check(await client.post("/openai/v1/chat/completions", json={**chat, "temperature": 1}), "POST", "/openai/v1/chat/completions")
        response, chunks = await stream_events(
            client, "POST", "/openai/v1/chat/completions", json={**chat, "stream": True, "stream_options": {"include_usage": True}}
        )
        doc.check_events(response, "POST", "/openai/v1/chat/completions", chunks)

        answered = await client.post("/openai/v1/responses", json={"model": MODEL, "input": "hi"})
        doc.check(answered, "POST", "/openai/v1/responses")
        response_id = answered.json()["id"]
        response, events = await stream_events(client, "POST", "/openai/v1/responses", json={"model": MODEL, "input": "hi", "stream": True})
        doc.check_events(response, "POST", "/openai/v1/responses", events)
        doc.check(await client.get(f"/openai/v1/responses/{response_id}"), "GET", "/openai/v1/responses/{response_id}")
        response, events = await stream_events(client, "GET", f"/openai/v1/responses/{response_id}", params={"stream": "true"})
        doc.check_events(response, "GET", "/openai/v1/responses/{response_id}", events)
        doc.check(await client.post(f"/openai/v1/responses/{response_id}/cancel"), "POST", "/openai/v1/responses/{response_id}/cancel")

        created_session = await client.post("/v1/sessions")
        doc.check(created_session, "POST", "/v1/sessions")


async def test_what_the_connection_refuses_is_documented_on_every_operation(server: e2e.TurnlogServer) -> None:
    """A URL or a header over its limit is refused by the connection before any route is chosen (api/connections.py):
    every operation, public or not, the facade's included, documents those answers as they come."""
    user = server.new_user()
    async with user.client() as client:
        doc = Document((await client.get("/openapi.json")).json())
        operations = [(method.upper(), path) for path, item in doc.document["paths"].items() for method in item]
        assert len(operations) > 30
        for method, path in operations:
            url = "/".join("x" if piece.startswith("{") else piece for piece in path.split("/"))
            too_long = await client.request(method, url, params={"q": "x" * 9000})
            assert too_long.status_code == 414, (method, path, too_long.text)
            doc.check(too_long, method, path)
            too_large = await client.request(method, url, headers={"X-Padding": "x" * 17_000})
            assert too_large.status_code == 431, (method, path, too_large.text)
            doc.check(too_large, method, path)
