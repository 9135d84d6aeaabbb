"""Dead letters: records a processor could not handle, kept with the reason (topic `dead-letters`)."""

from dataclasses import dataclass

DEAD_LETTERS = "dead-letters"


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    group: str
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    reason: str
