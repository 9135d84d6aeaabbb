"""Events of uploaded files and their ingestion (topic `documents`, keyed by file id).

They carry references, never bytes: an upload's bytes live in the blob store under `digest`. The
org of a file is its upload envelope's actor's; every later event of the file keeps that org.
"""

from dataclasses import dataclass
from datetime import datetime

FILE_ACLS = ("workspace", "owner")  # every member of the workspace | only the uploader
INGESTION_STATES = ("pending", "extracting", "indexing", "indexed", "failed")


@dataclass(frozen=True, kw_only=True)
class FileUploaded:
    """A file's bytes are in the blob store; ingestion may begin."""

    file_id: str
    workspace_id: str
    owner_id: str
    acl: str
    filename: str
    media_type: str
    size: int
    digest: str
    uploaded_at: datetime


@dataclass(frozen=True, kw_only=True)
class FileIngestionProgressed:
    """The ingester reached a stage (`extracting` or `indexing`), or indexed more chunks."""

    file_id: str
    state: str
    pages: int = 0
    chunks_total: int = 0
    chunks_indexed: int = 0


@dataclass(frozen=True, kw_only=True)
class FileIndexed:
    """Every chunk of the file is in the search index."""

    file_id: str
    title: str
    pages: int
    chunks: int


@dataclass(frozen=True, kw_only=True)
class FileIngestionFailed:
    """The file could not be read (damaged, encrypted, no text, its bytes gone); `reason` is for a person."""

    file_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class FileDeleted:
    """The file is gone for its users and its chunks leave the index; the log keeps its history."""

    file_id: str
    deleted_at: datetime


DOCUMENT_EVENT_TYPES = (FileUploaded, FileIngestionProgressed, FileIndexed, FileIngestionFailed, FileDeleted)
