"""Pure folds from conversation events to read-model rows; `version` is the event's log offset."""

from dataclasses import dataclass, field
from datetime import datetime

from events.conversation import AssistantTurnFinished, ConversationCreated, RunRequested, TurnSubmitted
from events.envelope import Envelope
from events.values import Usage
from projections.read_models import ConversationRow, RunRow, TurnRow


@dataclass(kw_only=True)
class RowBatch:
    """Rows to upsert, several events' worth; a later version of the same row replaces an earlier one."""

    conversations: list[ConversationRow] = field(default_factory=list)
    turns: list[TurnRow] = field(default_factory=list)
    runs: list[RunRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.conversations or self.turns or self.runs)


def fold(batch: RowBatch, envelope: Envelope, *, offset: int) -> None:
    """Add the rows `envelope` produces to `batch` (each event carries every column of its rows)."""
    event = envelope.payload
    scope = {
        "org_id": envelope.actor.org_id,
        "workspace_id": envelope.actor.workspace_id,
        "owner_id": envelope.actor.user_id,
    }
    match event:
        case ConversationCreated():
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
