"""Uploaded files and how far their ingestion got."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from api.schemas.base import Instant, ResponseModel


class IngestionProgress(ResponseModel):
    chunks_total: int
    chunks_indexed: int
    pages: int


class File(ResponseModel):
    """`POST /v1/files` (201), `GET /v1/files/{fileId}`."""

    file_id: str
    workspace_id: str
    owner_id: str
    filename: str
    media_type: str
    size: int
    acl: Literal["workspace", "owner"]
    ingestion_state: Literal["pending", "extracting", "indexing", "indexed", "failed"]
    progress: IngestionProgress
    created_at: Instant
    title: str | None = Field(default=None, description="the document's own title, once extracted")
    failure_reason: str | None = Field(default=None, description="why ingestion failed, for a person")


class FilePage(ResponseModel):
    """`GET /v1/files`, newest first; `nextBefore` asks for the next page."""

    files: list[File]
    next_before: str | None
