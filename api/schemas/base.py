"""The base of every answer model, and the field types they share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# An instant as the API writes it: ISO 8601 in UTC with milliseconds (`2026-04-25T17:10:00.000Z`, api/presenters.py).
Instant = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class ResponseModel(BaseModel):
    """A JSON answer of turnlog's own API: camelCase on the wire, nothing the model does not declare.

    A presenter builds the model and sends `wire()`: fields it did not set are left out (the document marks
    them optional), fields set to None are sent as null.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def wire(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class OpenAIModel(BaseModel):
    """An object of the OpenAI-compatible facade: OpenAI's snake_case names, as its SDKs read them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def wire(self) -> dict:
        return self.model_dump(mode="json", exclude_unset=True)
