"""The Starlette application: routes and error mapping; no business rules live here."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from api import admin, conversations, files, runs, safety_review, usage
from api.access import ConversationDirectory
from api.context import ApiContext
from api.openai.routes import ROUTES as OPENAI_ROUTES
from api.openai.models import served_models
from api.problems import exception_handlers
from api.rate_limit_fields import RateLimitFields
from inference.pools import PoolsConfig


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
    # Governance (docs/governance.md): the org's usage, and its administrators' controls.
    Route("/v1/usage", usage.get_usage, methods=["GET"]),
    Route("/v1/admin/credits", admin.grant_credits, methods=["POST"]),
    Route("/v1/admin/budget", admin.set_budget, methods=["PUT"]),
    Route("/v1/admin/refill", admin.set_refill, methods=["PUT"]),
    Route("/v1/admin/users/{user_id}/suspension", admin.suspend_user, methods=["POST"]),
    Route("/v1/admin/users/{user_id}/suspension", admin.reinstate_user, methods=["DELETE"]),
    # Safety (docs/safety.md): the decisions of the safety stages on the org's runs, for its administrators.
    Route("/v1/admin/safety-decisions", safety_review.list_safety_decisions, methods=["GET"]),
    # The OpenAI-compatible facade (docs/openai.md): OpenAI's shapes over the same conversations and runs.
    Mount("/openai/v1", routes=OPENAI_ROUTES),
]


def create_app(start: Callable[[], AbstractAsyncContextManager[ApiContext]], *, pools: PoolsConfig | None = None) -> Starlette:
    """The API; `start` opens the system behind it for the app's lifetime and yields its context.

    `pools`: the pools runs are routed over, listed as models at `/openai/v1/models` (None: the default pool).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with start() as context:
            app.state.context = context
            app.state.conversations = ConversationDirectory()
            yield

    app = Starlette(
        routes=ROUTES, exception_handlers=exception_handlers, lifespan=lifespan, middleware=[Middleware(RateLimitFields)]
    )
    if pools is not None:
        app.state.openai_models = served_models(pools)
    return app
