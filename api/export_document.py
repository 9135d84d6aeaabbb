"""A user's export document, written piece by piece from the read models: one page of rows in memory at a time.

A chain of small async iterators: the user's conversations, page by page; each one's turns, page by page, with
their runs read once per page; the files the user uploaded, page by page; and `export_pieces`, which writes them
as the text of one JSON object (the shape of `api.schemas.exports.ExportDocument`). Whoever sends the pieces (a
streamed answer, a background job writing blobs) never holds more than a page of rows and its text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import datetime

from api.files import file_json
from api.presenters import conversation_json, export_header_json, exported_turn_json
from api.schemas.exports import ExportedUser
from projections.read_models import ConversationRow, FileView, ReadModels, Scope, TurnRow

PAGE_SIZE = 100
FILE_CONTENTS = (
    "Uploaded files' bytes are not in this export, only their metadata under `files`: turnlog keeps them in its blob"
    " store and serves no download of them (yet); keep your originals."
)


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """Whose data, which of their workspaces, and as of when."""

    scope: Scope  # the user's org, the user, the workspaces their token grants
    workspace_id: str | None  # one of those only, or None: all of them
    exported_at: datetime


async def conversation_rows(
    read_models: ReadModels, scope: Scope, *, workspace_id: str | None, page_size: int = PAGE_SIZE
) -> AsyncGenerator[ConversationRow, None]:
    """The scope's conversations (its owner's own), newest first."""
    before: str | None = None
    while True:
        page = await read_models.conversations(scope, workspace_id=workspace_id, before=before, limit=page_size)
        for row in page:
            yield row
        if len(page) < page_size:
            return
        before = page[-1].conversation_id


async def turn_pages(
    read_models: ReadModels, scope: Scope, conversation_id: str, *, page_size: int = PAGE_SIZE
) -> AsyncGenerator[list[TurnRow], None]:
    """A conversation's turns, oldest first, a page at a time."""
    after_seq = 0
    while True:
        page = await read_models.turns(scope, conversation_id, after_seq=after_seq, limit=page_size)
        if page:
            yield page
        if len(page) < page_size:
            return
        after_seq = page[-1].turn_seq


async def file_pages(
    read_models: ReadModels, scope: Scope, *, workspace_id: str | None, page_size: int = PAGE_SIZE
) -> AsyncGenerator[list[FileView], None]:
    """The files the scope's owner uploaded (not the workspace's other members'), newest first, a page at a time."""
    before: str | None = None
    while True:
        page = await read_models.files(scope, workspace_id=workspace_id, before=before, limit=page_size, owned=True)
        if page:
            yield page
        if len(page) < page_size:
            return
        before = page[-1].file_id


async def export_pieces(
    read_models: ReadModels,
    request: ExportRequest,
    *,
    page_size: int = PAGE_SIZE,
    conversation_done: Callable[[], None] = lambda: None,
) -> AsyncGenerator[str, None]:
    """The export document's text, in pieces that join into one JSON object.

    The first piece comes once the first page of conversations has been read, so a store that cannot answer fails
    before anything is sent. `conversation_done` is called after each conversation's last piece (a job's progress).
    """
    scope = request.scope
    conversations = conversation_rows(read_models, scope, workspace_id=request.workspace_id, page_size=page_size)
    try:
        conversation = await anext(conversations, None)
        user = ExportedUser(user_id=scope.owner_id, org_id=scope.org_id, workspace_ids=list(scope.workspace_ids))
        header = export_header_json(
            user=user, exported_at=request.exported_at, workspace_id=request.workspace_id, file_contents=FILE_CONTENTS
        )
        yield _opened(header, "conversations")
        separator = ""
        while conversation is not None:
            yield separator + _opened(conversation_json(conversation), "turns")
            async for piece in _turn_pieces(read_models, scope, conversation.conversation_id, page_size=page_size):
                yield piece
            yield "]}"
            conversation_done()
            separator = ","
            conversation = await anext(conversations, None)
    finally:
        await conversations.aclose()
    yield '],"files":['
    separator = ""
    pages = file_pages(read_models, scope, workspace_id=request.workspace_id, page_size=page_size)
    try:
        async for page in pages:
            yield separator + ",".join(_dumps(file_json(view)) for view in page)
            separator = ","
    finally:
        await pages.aclose()
    yield "]}"


async def _turn_pieces(read_models: ReadModels, scope: Scope, conversation_id: str, *, page_size: int) -> AsyncGenerator[str, None]:
    """A conversation's turns as the members of its `turns` array, a page per piece, each page's runs read at once."""
    pages = turn_pages(read_models, scope, conversation_id, page_size=page_size)
    separator = ""
    try:
        async for page in pages:
            runs = await read_models.runs_by_id(scope, [turn.run_id for turn in page if turn.run_id])
            yield separator + ",".join(_dumps(exported_turn_json(turn, runs.get(turn.run_id))) for turn in page)
            separator = ","
    finally:
        await pages.aclose()


def _opened(members: dict, array_member: str) -> str:
    """`{...members, "array_member": [`: an object whose last member, an array, follows in later pieces."""
    text = _dumps(members)
    return text[:-1] + ("," if members else "") + _dumps(array_member) + ":["


def _dumps(value: object) -> str:
    # As Starlette's JSONResponse writes JSON: UTF-8 text, no spaces.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
