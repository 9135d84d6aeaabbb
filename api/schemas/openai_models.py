"""The facade's model catalog and its error shape, in OpenAI's shapes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.base import OpenAIModel


class ModelObject(OpenAIModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str = Field(description="`turnlog:<pool>`: the pool that serves it")


class ModelList(OpenAIModel):
    """`GET /models`."""

    object: Literal["list"]
    data: list[ModelObject]


class OpenAIErrorBody(OpenAIModel):
    message: str
    type: str = Field(description="`invalid_request_error`, `authentication_error`, `permission_error`, `rate_limit_error` or `server_error`")
    param: str | None
    code: str | None


class OpenAIError(OpenAIModel):
    """Every error of the facade: OpenAI's shape, with turnlog's status and headers."""

    error: OpenAIErrorBody
