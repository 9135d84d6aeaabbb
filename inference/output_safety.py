"""The output safety stage as the inference worker sees it: a port, filled by the composition root.

The worker streams an answer and stores it; what may be streamed and stored is decided by classifiers and
per-org policies that live above it (`processors/safety/`, which implements this port). So the worker asks
one `OutputWatch` per model step: after each delta, whether a window of the answer was checked and what came
of it (a `stop` ends the generation there: the deltas already sent were provisional); before the answer is
stored, what the whole of it may be stored as (as it is, redacted, or the policy's safe fallback). Each
verdict carries the `SafetyDecision` to append to the run's events, or none when there is nothing to record.
"""

from dataclasses import dataclass
from typing import Protocol

from events.runs import InferenceRequested
from events.safety import SafetyDecision
from kernel.envelope import Actor

# Verdicts after which the stored answer is not what streamed: the stream's end carries the stored one.
TEXT_CHANGING_ACTIONS = frozenset({"redact", "replace", "stop"})


@dataclass(frozen=True, kw_only=True)
class OutputVerdict:
    """What the output stage decided about a window or the whole answer, and what to store."""

    action: str  # allow | flag | redact | replace | stop
    text: str  # the answer to store: as it was (allow, flag), redacted, or the policy's fallback (replace, stop)
    reason: str = ""  # for the user with replace and stop; a reviewer's note otherwise
    decision: SafetyDecision | None = None  # to append on the run's events (None: nothing worth recording)

    @property
    def stops(self) -> bool:
        return self.action == "stop"

    @property
    def changes_text(self) -> bool:
        return self.action in TEXT_CHANGING_ACTIONS


class OutputWatch(Protocol):
    """One model step's answer, watched as it streams and judged whole before it is stored."""

    async def delta(self, text: str) -> OutputVerdict | None:
        """After each delta: the verdict on a window, when enough new text came for one (None otherwise)."""
        ...

    async def answer(self, text: str) -> OutputVerdict:
        """The whole answer, before it is stored."""
        ...


class OutputSafety(Protocol):
    """Starts an `OutputWatch` for each model step of a run, under its owner's org's policy."""

    def watch(self, request: InferenceRequested, *, actor: Actor) -> OutputWatch: ...
