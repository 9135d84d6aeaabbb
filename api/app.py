"""The Starlette application: routes and error mapping; no business rules live here."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api import conversations, files, runs
from api.access import ConversationDirectory
from api.context import ApiContext
from api.problems import exception_handlers


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


ROUTES = [
    Route("/healthz", health, methods=["GET"]),
    Route("/v1/conversations", conversations.create_conversation, methods=["POST"]),
    Route("/v1/conversations", conversations.list_conversations, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}", conversations.get_conversation, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}/turns", conversations.submit_turn, methods=["POST"]),
    Route("/v1/conversations/{conversation_id}/turns", conversations.list_turns, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}/regenerate", conversations.regenerate, methods=["POST"]),
    Route("/v1/runs/{run_id}", runs.get_run, methods=["GET"]),
    Route("/v1/runs/{run_id}/cancel", runs.cancel_run, methods=["POST"]),
    Route("/v1/runs/{run_id}/stream", runs.stream_run, methods=["GET"]),
    Route("/v1/runs/{run_id}/tool-calls/{call_id}/approval", runs.decide_tool_approval, methods=["POST"]),
    Route("/v1/files", files.upload_file, methods=["POST"]),
    Route("/v1/files", files.list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", files.get_file, methods=["GET"]),
    Route("/v1/files/{file_id}", files.delete_file, methods=["DELETE"]),
]


def create_app(start: Callable[[], AbstractAsyncContextManager[ApiContext]]) -> Starlette:
    """The API; `start` opens the system behind it for the app's lifetime and yields its context."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with start() as context:
            app.state.context = context
            app.state.conversations = ConversationDirectory()
            yield

    return Starlette(routes=ROUTES, exception_handlers=exception_handlers, lifespan=lifespan)
