"""Read-model rows as the API's JSON shapes (camelCase, ISO-8601 UTC times), built through the answer models of
api/schemas/, which /openapi.json is generated from: a shape the document does not describe fails here, in tests."""

from datetime import datetime

from api.schemas.conversations import Conversation, Turn
from api.schemas.exports import EXPORT_FORMAT, ExportDocument, ExportedTurn, ExportedUser
from api.schemas.runs import Run, TokenUsage
from api.schemas.streams import RunEndedEvent
from events.runs import RunFinished
from events.values import Usage
from projections.read_models import ConversationRow, RunRow, TurnRow


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def conversation_json(row: ConversationRow, *, latest_turn_seq: int | None = None) -> dict:
    fields: dict = {
        "conversation_id": row.conversation_id,
        "workspace_id": row.workspace_id,
        "title": row.title or None,
        "created_at": iso(row.created_at),
    }
    if latest_turn_seq is not None:
        fields["latest_turn_seq"] = latest_turn_seq
    return Conversation(**fields).wire()


def turn_json(row: TurnRow) -> dict:
    return Turn(**_turn_fields(row)).wire()


def exported_turn_json(row: TurnRow, run: RunRow | None) -> dict:
    """A turn in an export: as `turn_json`, with its finish time and (an assistant turn's) run summary."""
    fields = _turn_fields(row)
    fields["finished_at"] = iso(row.finished_at)
    if run is not None:
        fields["run"] = Run(**_run_fields(run))
    return ExportedTurn(**fields).wire()


def _turn_fields(row: TurnRow) -> dict:
    fields: dict = {
        "turn_seq": row.turn_seq,
        "role": row.role,
        "state": row.state,
        "content": row.content,
        "parent_turn_seq": row.parent_turn_seq,
        "run_id": row.run_id or None,
        "citations": row.citations,
        "sources": row.sources,
        "created_at": iso(row.created_at),
    }
    if row.role == "assistant":
        fields["tool_calls"] = row.tool_calls
    if row.reason:
        fields["reason"] = row.reason
    return fields


def usage_json(usage: Usage) -> dict:
    return usage_model(usage).wire()


def usage_model(usage: Usage) -> TokenUsage:
    return TokenUsage(prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens, output_tokens=usage.output_tokens)


def run_json(row: RunRow) -> dict:
    return Run(**_run_fields(row)).wire()


def _run_fields(row: RunRow) -> dict:
    fields: dict = {
        "run_id": row.run_id,
        "status": row.status,
        "mode": row.mode,
        "conversation_id": row.conversation_id,
        "turn_seq": row.turn_seq,
        "usage": usage_model(Usage(prompt_tokens=row.prompt_tokens, output_tokens=row.output_tokens)),
        "created_at": iso(row.created_at),
        "finished_at": iso(row.finished_at),
    }
    if row.reason:
        fields["reason"] = row.reason
    return fields


TERMINAL_STREAM_EVENT = {"completed": "assistant.completed", "cancelled": "run.cancelled", "failed": "run.failed"}


def run_finished_json(event: RunFinished) -> tuple[str, dict]:
    """The stream's last event: `assistant.completed`, `run.cancelled` or `run.failed`.

    With `replaced: true` and `text` when the stored answer is not what the deltas streamed (a safety stage
    refused, redacted, replaced or stopped it): a client shows `text` instead of the streamed text.
    """
    event_type = TERMINAL_STREAM_EVENT[event.status]
    fields: dict = {"type": event_type, "run_id": event.run_id, "turn_seq": event.turn_seq, "usage": usage_model(event.usage)}
    if event.reason:
        fields["reason"] = event.reason
    if event.text is not None:
        # The deltas were provisional: a safety stage changed the answer, and this is the one stored.
        fields["replaced"] = True
        fields["text"] = event.text
    return event_type, RunEndedEvent(**fields).wire()


def export_header_json(*, user: ExportedUser, exported_at: datetime, workspace_id: str | None, file_contents: str) -> dict:
    """The members of an export document before its `conversations` and `files`, which follow piece by piece."""
    document = ExportDocument(
        format=EXPORT_FORMAT, exported_at=iso(exported_at), user=user, workspace_id=workspace_id,
        file_contents=file_contents, conversations=[], files=[],
    )
    return document.model_dump(mode="json", by_alias=True, exclude={"conversations", "files"})
