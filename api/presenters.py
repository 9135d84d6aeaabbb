"""Read-model rows as the API's JSON shapes (camelCase, ISO-8601 UTC times)."""

from datetime import datetime

from events.runs import RunFinished
from events.values import Usage
from projections.read_models import ConversationRow, RunRow, TurnRow


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def conversation_json(row: ConversationRow, *, latest_turn_seq: int | None = None) -> dict:
    shape = {
        "conversationId": row.conversation_id,
        "workspaceId": row.workspace_id,
        "title": row.title or None,
        "createdAt": iso(row.created_at),
    }
    if latest_turn_seq is not None:
        shape["latestTurnSeq"] = latest_turn_seq
    return shape


def turn_json(row: TurnRow) -> dict:
    shape = {
        "turnSeq": row.turn_seq,
        "role": row.role,
        "state": row.state,
        "content": row.content,
        "parentTurnSeq": row.parent_turn_seq,
        "runId": row.run_id or None,
        "citations": row.citations,
        "sources": row.sources,
        "createdAt": iso(row.created_at),
    }
    if row.role == "assistant":
        shape["toolCalls"] = row.tool_calls
    if row.reason:
        shape["reason"] = row.reason
    return shape


def usage_json(usage: Usage) -> dict:
    return {
        "promptTokens": usage.prompt_tokens,
        "cachedTokens": usage.cached_tokens,
        "outputTokens": usage.output_tokens,
    }


def run_json(row: RunRow) -> dict:
    shape = {
        "runId": row.run_id,
        "status": row.status,
        "mode": row.mode,
        "conversationId": row.conversation_id,
        "turnSeq": row.turn_seq,
        "usage": usage_json(Usage(prompt_tokens=row.prompt_tokens, output_tokens=row.output_tokens)),
        "createdAt": iso(row.created_at),
        "finishedAt": iso(row.finished_at),
    }
    if row.reason:
        shape["reason"] = row.reason
    return shape


TERMINAL_STREAM_EVENT = {"completed": "assistant.completed", "cancelled": "run.cancelled", "failed": "run.failed"}


def run_finished_json(event: RunFinished) -> tuple[str, dict]:
    """The stream's last event: `assistant.completed`, `run.cancelled` or `run.failed`.

    With `replaced: true` and `text` when the stored answer is not what the deltas streamed (a safety stage
    refused, redacted, replaced or stopped it): a client shows `text` instead of the streamed text.
    """
    event_type = TERMINAL_STREAM_EVENT[event.status]
    shape = {"type": event_type, "runId": event.run_id, "turnSeq": event.turn_seq, "usage": usage_json(event.usage)}
    if event.reason:
        shape["reason"] = event.reason
    if event.text is not None:
        # The deltas were provisional: a safety stage changed the answer, and this is the one stored.
        shape["replaced"] = True
        shape["text"] = event.text
    return event_type, shape
