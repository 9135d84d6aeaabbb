"""The chat page at `/` and its static files at `/static/`, with a strict Content-Security-Policy on the page."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIRECTORY = Path(__file__).resolve().parent / "static"
# Scripts, styles and connections of this origin only: markup that got past the sanitizer still cannot run code.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def chat_page(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIRECTORY / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


ROUTES = [
    Route("/", chat_page, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=STATIC_DIRECTORY), name="static"),
]
