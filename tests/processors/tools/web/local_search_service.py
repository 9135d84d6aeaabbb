"""A stand-in for SearXNG and the web it finds, on loopback, for `web_search`'s tests and benchmark.

`GET /search?q=...&format=json` answers in SearXNG's JSON shape from the fixture corpus
(`fixtures/corpus.json`: each result's page under `fixtures/`, or an absolute URL), ranked by how often
the query's words occur in the result's title, snippet and page; like SearXNG it refuses any format
but json with a 403, and `q=!unresponsive` answers no result with a failed engine. Result URLs name the
host the client used (`Host`), so the pages are fetched from this same server:

- `/pages/<name>.html` (a fixture page), `/plain` (text/plain), `/binary` (application/octet-stream),
  `/status/<code>`;
- `/redirect?to=<url>` (302 to it), `/hops/<n>` (n redirects, then the tides page);
- `/big?bytes=<n>&declared=0|1` (an HTML page of n bytes, streamed; with its Content-Length when declared=1),
  `/bomb` (64 MiB of HTML in about 64 kB of gzip);
- `/stall` (never answers), `/drip` (answers, then one byte every 0.2 s, forever).

`python local_search_service.py` listens on 127.0.0.1 at a port of the kernel's choosing and prints
`port N` once it serves; `LocalSearchService.start()` runs it as a subprocess and waits for that.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FIXTURES = Path(__file__).with_name("fixtures")
START_DEADLINE_S = 60.0  # a loaded two-core machine takes seconds to import starlette and uvicorn
BOMB_BYTES = 64 * 1024 * 1024
COMMON_WORDS = frozenset("the and are was for how what when where which who why does with from that this".split())


@dataclass(frozen=True, kw_only=True)
class CorpusEntry:
    path: str  # on this server, or "" for an absolute URL
    url: str  # an absolute URL (with `{port}`), or "" for a path on this server
    title: str
    content: str
    text: str  # the page's words, for ranking


def load_corpus() -> list[CorpusEntry]:
    entries = []
    for result in json.loads((FIXTURES / "corpus.json").read_text())["results"]:
        path = result.get("path", "")
        page = FIXTURES / path.removeprefix("/pages/") if path.startswith("/pages/") else None
        text = re.sub(r"<[^>]+>", " ", page.read_text()) if page is not None else ""
        entries.append(CorpusEntry(path=path, url=result.get("url", ""), title=result["title"], content=result["content"], text=text))
    return entries


def ranked(corpus: list[CorpusEntry], query: str) -> list[tuple[CorpusEntry, int]]:
    """The entries that hold a word of the query, most occurrences first (the corpus's order on ties)."""
    terms = {word for word in re.findall(r"\w+", query.lower()) if len(word) > 2 and word not in COMMON_WORDS}
    scored = []
    for entry in corpus:
        words = Counter(re.findall(r"\w+", f"{entry.title} {entry.content} {entry.text}".lower()))
        score = sum(words[term] for term in terms)
        if score:
            scored.append((entry, score))
    return sorted(scored, key=lambda pair: -pair[1])


@cache
def bomb() -> bytes:
    return gzip.compress(b"<html><body><p>" + b" " * BOMB_BYTES + b"</p></body></html>", compresslevel=9)


def build_app():
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
    from starlette.routing import Route

    corpus = load_corpus()

    async def search(request: Request) -> Response:
        if request.query_params.get("format") != "json":
            return PlainTextResponse("Forbidden", status_code=403)
        query = request.query_params.get("q", "")
        host = request.headers["host"]
        port = host.rsplit(":", 1)[-1]
        unresponsive = [["google", "timeout"], ["duckduckgo", "CAPTCHA"]] if query == "!unresponsive" else []
        results = []
        for position, (entry, score) in enumerate(ranked(corpus, query), start=1):
            url = entry.url.replace("{port}", port) if entry.url else f"http://{host}{entry.path}"
            results.append(
                {
                    "url": url,
                    "title": entry.title,
                    "content": entry.content,
                    "engine": "fixture",
                    "engines": ["fixture"],
                    "positions": [position],
                    "score": float(score),
                    "category": "general",
                    "parsed_url": ["http", host, entry.path or url, "", "", ""],
                    "template": "default.html",
                    "publishedDate": None,
                }
            )
        return JSONResponse(
            {
                "query": query,
                "number_of_results": len(results),
                "results": results,
                "answers": [],
                "corrections": [],
                "infoboxes": [],
                "suggestions": [],
                "unresponsive_engines": unresponsive,
            }
        )

    async def page(request: Request) -> Response:
        name = request.path_params["name"]
        path = FIXTURES / name
        if "/" in name or path.suffix != ".html" or not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, media_type="text/html; charset=utf-8")

    async def plain(request: Request) -> Response:
        return PlainTextResponse("Plain notes on the moon.\n\nThe moon keeps the same face towards the Earth.\n")

    async def binary(request: Request) -> Response:
        return Response(bytes(range(256)) * 16, media_type="application/octet-stream")

    async def status(request: Request) -> Response:
        return PlainTextResponse(f"status {request.path_params['code']}", status_code=int(request.path_params["code"]))

    async def redirect(request: Request) -> Response:
        return RedirectResponse(request.query_params["to"], status_code=302)

    async def hops(request: Request) -> Response:
        left = int(request.path_params["count"])
        return RedirectResponse(f"/hops/{left - 1}" if left > 1 else "/pages/tides.html", status_code=302)

    async def big(request: Request) -> Response:
        size = int(request.query_params["bytes"])
        declared = request.query_params.get("declared") == "1"

        async def body():
            sent = 0
            paragraph = b"<p>" + b"The moon raises the tides. " * 37 + b"</p>\n"
            while sent < size:
                chunk = paragraph[: size - sent]
                sent += len(chunk)
                yield chunk

        headers = {"content-length": str(size)} if declared else None
        return StreamingResponse(body(), media_type="text/html", headers=headers)

    async def gzip_bomb(request: Request) -> Response:
        return Response(bomb(), media_type="text/html", headers={"content-encoding": "gzip"})

    async def stall(request: Request) -> Response:
        await asyncio.Event().wait()  # until the server shuts down
        return PlainTextResponse("never")

    async def drip(request: Request) -> Response:
        async def body():
            yield b"<html><body><p>"
            while True:
                await asyncio.sleep(0.2)
                yield b"."

        return StreamingResponse(body(), media_type="text/html")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("OK")

    return Starlette(
        routes=[
            Route("/search", search),
            Route("/pages/{name}", page),
            Route("/plain", plain),
            Route("/binary", binary),
            Route("/status/{code:int}", status),
            Route("/redirect", redirect),
            Route("/hops/{count:int}", hops),
            Route("/big", big),
            Route("/bomb", gzip_bomb),
            Route("/stall", stall),
            Route("/drip", drip),
            Route("/healthz", healthz),
        ]
    )


async def serve() -> None:
    import uvicorn

    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it each
    # response on a kept-alive connection waits 40 ms for the client's delayed ACK (Nagle).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    bomb()  # compressed once, before the first request waits for it
    # A stalled request must not hold the shutdown: it is cancelled after a second.
    config = uvicorn.Config(build_app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    print(f"port {listener.getsockname()[1]}", flush=True)
    await task


@dataclass(frozen=True, kw_only=True)
class LocalSearchService:
    """The service running as a subprocess: `base_url` is `http://127.0.0.1:<port>`."""

    process: subprocess.Popen
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls) -> LocalSearchService:
        process = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        line = process.stdout.readline()  # its port once it serves; a crash ends the output instead
        if not line.startswith("port "):
            process.kill()
            raise RuntimeError(f"the local search service did not start (exit code {process.poll()}, said {line!r})")
        service = cls(process=process, port=int(line.split()[1]))
        service._wait_until_answering()
        return service

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2.0):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the local search service on port {self.port} never answered") from None
                time.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(serve())
