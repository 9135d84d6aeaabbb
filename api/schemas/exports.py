"""A user's export: every conversation they own with its turns and runs, and their files' metadata, as one document;
and the background job that writes the same document into the blob store."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.base import Instant, ResponseModel
from api.schemas.conversations import Conversation, Turn
from api.schemas.files import File
from api.schemas.runs import Run

EXPORT_FORMAT = "turnlog-export/1"

ExportState = Literal["queued", "running", "completed", "failed"]


class ExportedUser(ResponseModel):
    """Whose data this is, and the workspaces their token granted when it was exported."""

    user_id: str
    org_id: str
    workspace_ids: list[str]


class ExportedTurn(Turn):
    """A turn as `GET /v1/conversations/{id}/turns` shows it, with when it finished and its run's summary."""

    finished_at: Instant | None = Field(description="when the turn was submitted (user) or its run ended (assistant); null while in progress")
    run: Run | None = Field(
        default=None,
        description="assistant turns: the run that produced it, as `GET /v1/runs/{id}` shows it without its route, prompt,"
        " tool calls, progress or result (the turn holds the answer)",
    )


class ExportedConversation(Conversation):
    """A conversation as `GET /v1/conversations` lists it, with every turn, oldest first (a regenerated answer is a
    sibling: another assistant turn with the same `parentTurnSeq`)."""

    turns: list[ExportedTurn]


class ExportDocument(ResponseModel):
    """`GET /v1/export` and `GET /v1/exports/{exportId}/download`: the document, streamed in this member order."""

    format: Literal["turnlog-export/1"] = Field(description="this shape's name and version")
    exported_at: Instant
    user: ExportedUser
    workspace_id: str | None = Field(description="the one workspace exported (`workspaceId`), or null: every one the token grants")
    file_contents: str = Field(description="where uploaded files' bytes are: never in the export")
    conversations: list[ExportedConversation] = Field(description="the user's own conversations, newest first")
    files: list[File] = Field(description="the files the user uploaded (not deleted), newest first, as `GET /v1/files/{id}` shows them")


class Export(ResponseModel):
    """`POST /v1/exports` (202), `GET /v1/exports/{exportId}`: a background export and how far it got."""

    export_id: str
    state: ExportState
    workspace_id: str | None = Field(description="the one workspace exported, or null: every one the token granted")
    conversations_total: int | None = Field(description="the conversations to export, once counted")
    conversations_done: int
    created_at: Instant
    finished_at: Instant | None
    size: int | None = Field(description="the document's bytes, once completed")
    download_url: str | None = Field(description="once completed: `GET` it for the document")
    failure_reason: str | None = Field(default=None, description="why it failed, for a person")
