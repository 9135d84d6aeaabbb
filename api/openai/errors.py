"""OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, for every error of the facade."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.problems import PROBLEM_TYPE_BASE, problem_kind_for, problem_response
from kernel.errors import InvalidRequest, NotFound, TurnlogError, Unavailable

logger = logging.getLogger(__name__)

# OpenAI's `error.type` by HTTP status; `code` is turnlog's problem type (`quota_exceeded`, ...) unless a leaf names one.
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}


class UnsupportedParameter(InvalidRequest):
    """A request field the facade does not implement, or a value of it that it cannot honour; `param` names it."""

    def __init__(self, *, param: str, detail: str, code: str = "unsupported_parameter") -> None:
        super().__init__(detail=detail)
        self.param = param
        self.code = code


class ModelNotFound(NotFound):
    """The request names a model no pool of this deployment serves."""

    def __init__(self, *, model: str, served: tuple[str, ...]) -> None:
        super().__init__(detail=f"The model '{model}' does not exist; this deployment serves: {', '.join(served)}")
        self.model = model


def error_json(*, message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_type_for(status: int) -> str:
    if status >= 500:
        return "server_error"
    return _TYPES.get(status, "invalid_request_error")


def openai_error_response(error: TurnlogError) -> Response:
    """The error with turnlog's status and headers (Retry-After, rate-limit fields, WWW-Authenticate), OpenAI's body."""
    kind = problem_kind_for(error)
    param: str | None = None
    code: str | None = kind.type.removeprefix(PROBLEM_TYPE_BASE).replace("-", "_") if kind.type.startswith(PROBLEM_TYPE_BASE) else None
    match error:
        case UnsupportedParameter():
            param, code = error.param, error.code
        case ModelNotFound():
            param, code = "model", "model_not_found"
        case InvalidRequest(errors=errors) if errors:
            param = errors[0].field
    problem = problem_response(error)
    headers = {name: value for name, value in problem.headers.items() if name.lower() not in ("content-type", "content-length")}
    body = error_json(message=error.detail, error_type=error_type_for(kind.status), param=param, code=code)
    return JSONResponse(body, status_code=kind.status, headers=headers)


def error_sse(error: TurnlogError) -> bytes:
    """An error inside a stream that has already started: the openai SDK raises on a `data:` line holding `error`."""
    body = error_json(message=error.detail, error_type=error_type_for(problem_kind_for(error).status))
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode("utf-8")


def in_openai_shape(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Answer the handler's errors in OpenAI's shape rather than problem+json."""

    @functools.wraps(handler)
    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except TurnlogError as error:
            if problem_kind_for(error).status >= 500 and not isinstance(error, Unavailable):
                logger.error("unexpected %s on %s %s", type(error).__name__, request.method, request.url.path, exc_info=error)
            return openai_error_response(error)
        except Exception:
            logger.exception("unhandled error on %s %s", request.method, request.url.path)
            body = error_json(message="An unexpected error occurred; it has been logged.", error_type="server_error")
            return JSONResponse(body, status_code=500)

    return answer
