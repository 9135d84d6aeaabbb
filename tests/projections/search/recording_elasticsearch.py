"""A real HTTP server that answers the Elasticsearch REST calls `ElasticsearchIndex` makes, and records them.

It exists because no Elasticsearch server installs on these machines: it checks the adapter's
wiring through the official client (paths, methods, parameters, bodies, the alias swap), not
Elasticsearch's behaviour. It keeps indices, aliases and documents in memory so a sequence of
calls stays coherent: create with aliases, `_aliases` (atomic, `must_exist` honoured), bulk
(`require_alias` honoured), `_count` and `_delete_by_query` (exact `term`/`terms`/`bool` filters).
It does not rank or filter searches: `_search` and `_msearch` answer with the target index's
documents in insertion order, so tests of search assert on the request bodies it recorded.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_HEADERS = {"X-Elastic-Product": "Elasticsearch"}  # the client refuses answers without it


@dataclass(frozen=True, kw_only=True)
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    body: Any  # parsed JSON, a list of parsed NDJSON lines, or None


@dataclass(kw_only=True)
class _Index:
    body: dict[str, Any]
    aliases: set[str] = field(default_factory=set)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)  # _id -> _source, in insertion order


class RecordingElasticsearch:
    """Start with `await start()`, point the client at `url`, read `requests`, `await stop()`."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.indices: dict[str, _Index] = {}
        # (method, path) -> what another client does just before this request is answered (once):
        # replays races between processes deterministically.
        self.interpose: dict[tuple[str, str], Callable[[], None]] = {}
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None
        self._socket: socket.socket | None = None
        methods = ["GET", "HEAD", "PUT", "POST", "DELETE"]
        self._app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    @property
    def url(self) -> str:
        assert self._socket is not None
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._server = uvicorn.Server(uvicorn.Config(self._app, log_level="warning", lifespan="off"))
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._socket is not None:
            self._socket.close()

    def calls(self, method: str | None = None, path_suffix: str = "") -> list[RecordedRequest]:
        return [r for r in self.requests if (method is None or r.method == method) and r.path.endswith(path_suffix)]

    def create_index(self, name: str, *, aliases: tuple[str, ...] = ()) -> None:
        """An index made by someone else (another process, an operator)."""
        self.indices[name] = _Index(body={}, aliases=set(aliases))

    def aliased(self, alias: str) -> list[str]:
        return [name for name, index in self.indices.items() if alias in index.aliases]

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        body: Any = None
        if raw:
            if "ndjson" in request.headers.get("content-type", ""):
                body = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
            else:
                body = json.loads(raw)
        path = "/" + request.path_params["path"]
        self.requests.append(RecordedRequest(method=request.method, path=path, params=dict(request.query_params), body=body))
        parts = [part for part in path.split("/") if part]
        if (meddle := self.interpose.pop((request.method, path), None)) is not None:
            meddle()
        status, answer = self._answer(request.method, parts, dict(request.query_params), body)
        if request.method == "HEAD":
            return Response(status_code=status, headers=_HEADERS)
        return JSONResponse(answer, status_code=status, headers=_HEADERS)

    def _answer(self, method: str, parts: list[str], params: dict[str, str], body: Any) -> tuple[int, Any]:
        match (method, parts):
            case ("HEAD" | "GET", ["_alias", alias]):
                holders = self.aliased(alias)
                if not holders:
                    return 404, {"error": f"alias [{alias}] missing", "status": 404}
                return 200, {name: {"aliases": {alias: {}}} for name in holders}
            case ("GET", [pattern, "_alias"]):
                return 200, {
                    name: {"aliases": {alias: {} for alias in index.aliases}}
                    for name, index in self.indices.items()
                    if fnmatch.fnmatchcase(name, pattern)
                }
            case ("PUT" | "POST", ["_bulk"]):
                return self._bulk(body, require_alias=params.get("require_alias") == "true")
            case ("PUT", [name]):
                if name in self.indices:
                    return 400, _error("resource_already_exists_exception", f"index [{name}] already exists", 400)
                self.indices[name] = _Index(body=body or {}, aliases=set((body or {}).get("aliases", {})))
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
            case ("DELETE", [name]):
                if self.indices.pop(name, None) is None:
                    return 404, _error("index_not_found_exception", f"no such index [{name}]", 404)
                return 200, {"acknowledged": True}
            case ("POST", ["_aliases"]):
                return self._update_aliases(body["actions"])
            case ("PUT", [name, "_settings"]):
                self.indices[name].body.setdefault("settings", {}).setdefault("index", {}).update(body["index"])
                return 200, {"acknowledged": True}
            case ("POST" | "GET", [name, "_refresh"]):
                return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
            case ("POST" | "GET", [target, "_count"]):
                documents = self._documents(target)
                if documents is None:
                    return 404, _error("index_not_found_exception", f"no such index [{target}]", 404)
                return 200, {"count": sum(_matches(doc, body["query"]) for doc in documents.values())}
            case ("POST", [target, "_delete_by_query"]):
                name = self._resolve(target)
                if name is None:
                    return 404, _error("index_not_found_exception", f"no such index [{target}]", 404)
                documents = self.indices[name].documents
                doomed = [doc_id for doc_id, doc in documents.items() if _matches(doc, body["query"])]
                for doc_id in doomed:
                    del documents[doc_id]
                return 200, {"took": 1, "timed_out": False, "total": len(doomed), "deleted": len(doomed), "failures": []}
            case ("POST" | "GET", [target, "_search"]):
                return 200, self._search(target, body)
            case ("POST" | "GET", [target, "_msearch"]):
                searches = body[1::2]  # header, body, header, body ...
                return 200, {"took": 1, "responses": [{**self._search(target, search), "status": 200} for search in searches]}
        return 400, _error("illegal_argument_exception", f"the recording server does not answer {method} /{'/'.join(parts)}", 400)

    def _resolve(self, target: str) -> str | None:
        if target in self.indices:
            return target
        holders = self.aliased(target)
        return holders[0] if len(holders) == 1 else None

    def _documents(self, target: str) -> dict[str, dict[str, Any]] | None:
        name = self._resolve(target)
        return None if name is None else self.indices[name].documents

    def _update_aliases(self, actions: list[dict[str, Any]]) -> tuple[int, Any]:
        staged = {name: set(index.aliases) for name, index in self.indices.items()}
        for action in actions:
            ((kind, spec),) = action.items()
            if spec["index"] not in staged:
                return 404, _error("index_not_found_exception", f"no such index [{spec['index']}]", 404)
            if kind == "add":
                staged[spec["index"]].add(spec["alias"])
            elif kind == "remove":
                if spec["alias"] not in staged[spec["index"]] and spec.get("must_exist"):
                    return 404, _error("aliases_not_found_exception", f"aliases [{spec['alias']}] missing", 404)
                staged[spec["index"]].discard(spec["alias"])
        for name, aliases in staged.items():  # all actions or none
            self.indices[name].aliases = aliases
        return 200, {"acknowledged": True, "errors": False}

    def _bulk(self, lines: list[dict[str, Any]], *, require_alias: bool) -> tuple[int, Any]:
        items, errors = [], False
        for action, source in zip(lines[::2], lines[1::2]):
            ((kind, meta),) = action.items()
            assert kind == "index", f"the recording server only answers bulk index actions, not {kind}"
            name = self._resolve(meta["_index"])
            if name is None or (require_alias and meta["_index"] in self.indices):
                errors = True
                error = _error("index_not_found_exception", f"[{meta['_index']}] is not an alias", 404)["error"]
                items.append({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 404, "error": error}})
                continue
            documents = self.indices[name].documents
            created = meta["_id"] not in documents
            documents[meta["_id"]] = source
            items.append({"index": {"_index": name, "_id": meta["_id"], "status": 201 if created else 200,
                                    "result": "created" if created else "updated"}})
        return 200, {"took": 1, "errors": errors, "items": items}

    def _search(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        name = self._resolve(target)
        documents = list(self.indices[name].documents.items()) if name else []
        excluded = set(body.get("_source", {}).get("excludes", []))
        hits = [
            {"_index": name, "_id": doc_id, "_score": 1.0 / (rank + 1), "_source": {k: v for k, v in doc.items() if k not in excluded}}
            for rank, (doc_id, doc) in enumerate(documents[: body.get("size", 10)])
        ]
        return {"took": 1, "timed_out": False, "hits": {"max_score": 1.0 if hits else None, "hits": hits}}


def _error(kind: str, reason: str, status: int) -> dict[str, Any]:
    return {"error": {"type": kind, "reason": reason, "root_cause": [{"type": kind, "reason": reason}]}, "status": status}


def _matches(document: dict[str, Any], clause: dict[str, Any]) -> bool:
    """Exact `term`, `terms` and `bool` (filter/must/should) clauses; anything else is an error here."""
    ((kind, spec),) = clause.items()
    if kind == "term":
        ((name, value),) = spec.items()
        return document.get(name) == value
    if kind == "terms":
        ((name, values),) = spec.items()
        return document.get(name) in values
    if kind == "bool":
        required = [*spec.get("filter", []), *spec.get("must", [])]
        should = spec.get("should", [])
        minimum = spec.get("minimum_should_match", 0 if required else 1) if should else 0
        return all(_matches(document, part) for part in required) and sum(_matches(document, part) for part in should) >= minimum
    raise AssertionError(f"the recording server does not evaluate {kind} clauses")
