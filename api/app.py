"""The Starlette application: routes and error mapping; no business rules live here."""

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from api import admin, analytics, api_key_admin, conversations, files, runs, safety_review, usage
from api import exports, sessions
from api import erasures
from api import search
from api.access import ConversationDirectory
from api.api_keys import ApiKeyFence
from api.context import ApiContext
from api.export_jobs import ExportJobs
from api.health import metrics as metrics_endpoint, ready
from api.observability import ObservedRequests
from api.oidc import OidcKeyFetch
from api.cors import enable_cors
from api.openai.routes import ROUTES as OPENAI_ROUTES
from api.openai.models import served_models
from api.openapi import openapi_document
from api.problems import exception_handlers
from api.rate_limit_fields import RateLimitFields
from api.sign_in_codes import SignInCodes
from api.web import pages as web_pages
from inference.pools import PoolsConfig


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


ROUTES = [
    Route("/healthz", health, methods=["GET"]),
    # The OpenAPI 3.1 document of every route here, generated from the request and answer models (api/openapi.py).
    Route("/openapi.json", openapi_document, methods=["GET"]),
    Route("/v1/conversations", conversations.create_conversation, methods=["POST"]),
    Route("/v1/conversations", conversations.list_conversations, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}", conversations.get_conversation, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}", conversations.rename_conversation, methods=["PATCH"]),
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
    # Ranked passages of a workspace's documents, no model (api/search.py).
    Route("/v1/search", search.search, methods=["POST"]),
    # A user's own data as one JSON document: streamed, or built in the background with progress (api/exports.py).
    Route("/v1/export", exports.export, methods=["GET"]),
    Route("/v1/exports", exports.start_export, methods=["POST"]),
    Route("/v1/exports/{export_id}", exports.get_export, methods=["GET"]),
    Route("/v1/exports/{export_id}/download", exports.download_export, methods=["GET"]),
    # Governance (docs/governance.md): the org's usage, and its administrators' controls.
    Route("/v1/usage", usage.get_usage, methods=["GET"]),
    Route("/v1/admin/credits", admin.grant_credits, methods=["POST"]),
    Route("/v1/admin/budget", admin.set_budget, methods=["PUT"]),
    Route("/v1/admin/refill", admin.set_refill, methods=["PUT"]),
    Route("/v1/admin/users/{user_id}/suspension", admin.suspend_user, methods=["POST"]),
    Route("/v1/admin/users/{user_id}/suspension", admin.reinstate_user, methods=["DELETE"]),
    # Erasure (docs/encryption.md): a user's or the org's data keys destroyed, their derived data dropped.
    Route("/v1/admin/erasures", erasures.create_erasure, methods=["POST"]),
    # Safety (docs/safety.md): the decisions of the safety stages on the org's runs, for its administrators.
    Route("/v1/admin/safety-decisions", safety_review.list_safety_decisions, methods=["GET"]),
    # Analytics (docs/analytics.md): the documented analysts' queries, run over the caller's org only.
    Route("/v1/admin/analytics", analytics.list_analytics, methods=["GET"]),
    Route("/v1/admin/analytics/{name}", analytics.run_analytics, methods=["GET"]),
    # API keys for programs (docs/api-keys.md): the org's administrators create, list and revoke them.
    Route("/v1/admin/api-keys", api_key_admin.create_api_key, methods=["POST"]),
    Route("/v1/admin/api-keys", api_key_admin.list_api_keys, methods=["GET"]),
    Route("/v1/admin/api-keys/{key_id}", api_key_admin.get_api_key, methods=["GET"]),
    Route("/v1/admin/api-keys/{key_id}", api_key_admin.revoke_api_key, methods=["DELETE"]),
    # The OpenAI-compatible facade (docs/openai.md): OpenAI's shapes over the same conversations and runs.
    Mount("/openai/v1", routes=OPENAI_ROUTES),
    # Browser sessions (docs/web.md): signed in with a bearer token, or the one-time link `turnlog serve` prints.
    Route("/v1/sessions", sessions.create_session, methods=["POST"]),
    Route("/v1/sessions/current", sessions.current_session, methods=["GET"]),
    Route("/v1/sessions/current", sessions.delete_session, methods=["DELETE"]),
    Route("/signin", sessions.sign_in_with_code, methods=["GET"]),
    # The web chat page at / and its static files (docs/web.md).
    *web_pages.ROUTES,
]

# For operators and their tools, not API clients (so not in the OpenAPI document): readiness and Prometheus metrics
# (api/health.py, docs/observability.md).
OPERATIONS_ROUTES = [
    Route("/readyz", ready, methods=["GET"]),
    Route("/metrics", metrics_endpoint, methods=["GET"]),
]


def create_app(
    start: Callable[[], AbstractAsyncContextManager[ApiContext]], *, pools: PoolsConfig | None = None,
    cors_origins: Sequence[str] = (), sign_in_codes: SignInCodes | None = None, access_log: bool = True,
) -> Starlette:
    """The API; `start` opens the system behind it for the app's lifetime and yields its context.

    `pools`: the pools runs are routed over, listed as models at `/openai/v1/models` (None: the default pool).
    `cors_origins`: other origins whose pages may call the API (none: CORS is off). `sign_in_codes`: the one-time
    sign-in links this process honours at `/signin` (docs/web.md). `access_log`: one log line per request
    (docs/observability.md); request ids and metrics are kept either way.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with start() as context:
            app.state.context = context
            app.state.conversations = ConversationDirectory()
            app.state.exports = ExportJobs(blobs=context.blobs)
            try:
                yield
            finally:
                await app.state.exports.close()  # before the context closes the store its jobs read

    app = Starlette(
        routes=[*ROUTES, *OPERATIONS_ROUTES], exception_handlers=exception_handlers, lifespan=lifespan,
        # ObservedRequests first: its request id, duration and access log line cover the other middlewares too.
        middleware=[Middleware(ObservedRequests, access_log=access_log), Middleware(RateLimitFields), Middleware(ApiKeyFence),
                    # An OIDC provider's token waits here, not in `authenticate`, for its key to be fetched (api/oidc.py).
                    Middleware(OidcKeyFetch)]
    )
    if pools is not None:
        app.state.openai_models = served_models(pools)
    if cors_origins:
        enable_cors(app, cors_origins)
    app.state.sign_in_codes = sign_in_codes
    return app
