"""Replies of the decider to each command (topic `command-outcomes`, keyed by command id)."""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, kw_only=True)
class CommandAccepted:
    command_id: str
    conversation_id: str
    run_id: str | None = None
    turn_seq: int | None = None
    created_at: datetime
    # Where the command's events landed: the API waits until readers can see them there before it
    # answers, so the next read, on any instance, sees the write (Kafka makes a transaction visible
    # partition by partition, not all at once).
    conversation_offset: int | None = None
    run_offset: int | None = None


@dataclass(frozen=True, kw_only=True)
class CommandRejected:
    command_id: str
    conversation_id: str
    code: str
    detail: str


CommandOutcome = CommandAccepted | CommandRejected
