"""Pure folds from conversation and document events to read-model rows; `version` is the event's log offset."""

from dataclasses import dataclass, field
from datetime import datetime

from events.conversation import AssistantTurnFinished, ConversationCreated, ConversationRenamed, RunRequested, TurnSubmitted
from events.documents import (
    DOCUMENT_EVENT_TYPES,
    FileDeleted,
    FileIndexed,
    FileIngestionFailed,
    FileIngestionProgressed,
    FileUploaded,
)
from kernel.envelope import Envelope
from events.values import Usage
from projections.read_models import ConversationRow, FileRow, FileStateRow, RunRow, TurnRow

# A deletion is final. The ingester may append a file's progress or outcome after its deletion (it was mid-file when
# the deletion came), and those must not bring the file back: a deleted row's version outranks every offset.
DELETED_FILE_VERSION = 1 << 62


@dataclass(kw_only=True)
class RowBatch:
    """Rows to upsert, several events' worth; a later version of the same row replaces an earlier one."""

    conversations: list[ConversationRow] = field(default_factory=list)
    turns: list[TurnRow] = field(default_factory=list)
    runs: list[RunRow] = field(default_factory=list)
    files: list[FileRow] = field(default_factory=list)
    file_states: list[FileStateRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.conversations or self.turns or self.runs or self.files or self.file_states)


def fold(batch: RowBatch, envelope: Envelope, *, offset: int) -> None:
    """Add the rows `envelope` produces to `batch` (each event carries every column of its rows)."""
    event = envelope.payload
    if isinstance(event, DOCUMENT_EVENT_TYPES):
        _fold_file(batch, envelope, offset=offset)
        return
    scope = {
        "org_id": envelope.actor.org_id,
        "workspace_id": envelope.actor.workspace_id,
        "owner_id": envelope.actor.user_id,
    }
    match event:
        case ConversationCreated() | ConversationRenamed():
            batch.conversations.append(
                ConversationRow(
                    **scope,
                    conversation_id=event.conversation_id,
                    title=event.title or "",
                    created_at=event.created_at,
                    version=offset,
                )
            )
        case TurnSubmitted():
            batch.turns.append(
                TurnRow(
                    **scope,
                    conversation_id=event.conversation_id,
                    turn_seq=event.turn_seq,
                    role="user",
                    state="completed",
                    content=[{"type": part.type, "text": part.text} for part in event.content],
                    parent_turn_seq=event.parent_turn_seq,
                    created_at=event.submitted_at,
                    finished_at=event.submitted_at,
                    version=offset,
                )
            )
        case RunRequested():
            _add_assistant_turn(
                batch,
                scope,
                event.run_id,
                conversation_id=event.conversation_id,
                turn_seq=event.turn_seq,
                parent_turn_seq=event.parent_turn_seq,
                mode=event.mode,
                state="in_progress",
                created_at=event.requested_at,
                version=offset,
            )
        case AssistantTurnFinished():
            _add_assistant_turn(
                batch,
                scope,
                event.run_id,
                conversation_id=event.conversation_id,
                turn_seq=event.turn_seq,
                parent_turn_seq=event.parent_turn_seq,
                mode=event.mode,
                state=event.state,
                content=[{"type": part.type, "text": part.text} for part in event.content],
                reason=event.reason,
                usage=event.usage,
                created_at=event.requested_at,
                finished_at=event.finished_at,
                version=offset,
                citations=[
                    {"marker": c.marker, "sourceId": c.file_id, "chunkId": c.chunk_id, "title": c.title,
                     "location": c.location, "quote": c.quote}
                    for c in event.citations
                ],
                sources=[
                    {"marker": s.marker, "sourceId": s.file_id, "chunkId": s.chunk_id, "title": s.title,
                     "location": s.location}
                    for s in event.sources
                ],
                tool_calls=[
                    {"callId": c.call_id, "toolName": c.tool_name, "status": c.status, "attempts": c.attempts,
                     "durationMs": c.duration_ms}
                    for c in event.tool_calls
                ],
            )


def _add_assistant_turn(
    batch: RowBatch,
    scope: dict[str, str],
    run_id: str,
    *,
    conversation_id: str,
    turn_seq: int,
    parent_turn_seq: int,
    mode: str,
    state: str,
    created_at: datetime,
    version: int,
    content: list[dict] | None = None,
    reason: str = "",
    usage: Usage | None = None,
    finished_at: datetime | None = None,
    citations: list[dict] | None = None,
    sources: list[dict] | None = None,
    tool_calls: list[dict] | None = None,
) -> None:
    """The assistant turn a run produces and the run itself share their state: one row each."""
    usage = usage or Usage()
    batch.turns.append(
        TurnRow(
            **scope,
            conversation_id=conversation_id,
            turn_seq=turn_seq,
            role="assistant",
            state=state,
            content=content or [],
            parent_turn_seq=parent_turn_seq,
            run_id=run_id,
            citations=citations or [],
            sources=sources or [],
            tool_calls=tool_calls or [],
            reason=reason,
            created_at=created_at,
            finished_at=finished_at,
            version=version,
        )
    )
    batch.runs.append(
        RunRow(
            **scope,
            run_id=run_id,
            conversation_id=conversation_id,
            turn_seq=turn_seq,
            mode=mode,
            status=state,
            reason=reason,
            prompt_tokens=usage.prompt_tokens,
            output_tokens=usage.output_tokens,
            created_at=created_at,
            finished_at=finished_at,
            version=version,
        )
    )


def _fold_file(batch: RowBatch, envelope: Envelope, *, offset: int) -> None:
    """A file's header (from its upload) and its state (from every event of it)."""
    event = envelope.payload
    org_id = envelope.actor.org_id  # the uploader's org; later events of the file keep it
    match event:
        case FileUploaded():
            batch.files.append(
                FileRow(
                    org_id=org_id,
                    workspace_id=event.workspace_id,
                    owner_id=event.owner_id,
                    file_id=event.file_id,
                    acl=event.acl,
                    filename=event.filename,
                    media_type=event.media_type,
                    size=event.size,
                    digest=event.digest,
                    created_at=event.uploaded_at,
                    version=offset,
                )
            )
            state = FileStateRow(org_id=org_id, file_id=event.file_id, state="pending", version=offset)
        case FileIngestionProgressed():
            state = FileStateRow(
                org_id=org_id,
                file_id=event.file_id,
                state=event.state,
                pages=event.pages,
                chunks_total=event.chunks_total,
                chunks_indexed=event.chunks_indexed,
                version=offset,
            )
        case FileIndexed():
            state = FileStateRow(
                org_id=org_id,
                file_id=event.file_id,
                state="indexed",
                pages=event.pages,
                chunks_total=event.chunks,
                chunks_indexed=event.chunks,
                title=event.title,
                version=offset,
            )
        case FileIngestionFailed():
            state = FileStateRow(
                org_id=org_id, file_id=event.file_id, state="failed", failure_reason=event.reason, version=offset
            )
        case FileDeleted():
            state = FileStateRow(org_id=org_id, file_id=event.file_id, state="deleted", version=DELETED_FILE_VERSION + offset)
        case _:
            return
    batch.file_states.append(state)
