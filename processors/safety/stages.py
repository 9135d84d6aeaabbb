"""The safety stages as the processors call them: each check's decision event, and what the stage changes.

`SafetyStages` wraps `SafetyChecks` for the four places a run is checked:

- input (`processors/prompting.py`, before the prompt is built): the user turn; its prompt text (redacted when
  the policy says so) or the refusal the user gets as the answer. Earlier user turns go into later prompts as
  their own input check left them (`earlier`: redacted, or withheld when it refused), checked again once per
  process and cached, so a turn's PII never reaches the model through the history either;
- context (the prompt builder's passages, the tool loop's results): which subjects are fenced or dropped;
- tool (the tool loop, before a call is requested): whether the call's arguments are refused, and why;
- output (`inference/worker.py`, through the `OutputSafety` port): windows while the answer streams, and the
  whole answer before it is stored.

A stage the org's policy does not configure (no classifiers) is not run and records nothing, so orgs without
a policy pay nothing. Every check that runs yields a `SafetyDecision` for the caller to append with the run's
envelope as cause, except streaming windows that allow (the check of the whole answer covers them).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from events.runs import InferenceRequested
from events.safety import SafetyDecision
from inference.output_safety import OutputVerdict
from kernel.envelope import Actor, utc_now
from processors.safety.checks import SafetyChecks
from processors.safety.decision import Decision
from processors.safety.policies import SafetyPolicies, Stage
from processors.safety.redaction import redact
from processors.safety.windows import DEFAULT_OVERLAP_CHARS, DEFAULT_WINDOW_CHARS, StreamWindows

# What a later prompt carries instead of an earlier user turn its input check refused.
WITHHELD_TURN = "(a message withheld by the safety policy)"
# What the model reads instead of a tool result the context stage dropped.
WITHHELD_RESULT = "[withheld by the safety policy: the result looked like instructions injected into data]"
# Input categories that never count against the user (docs/safety.md): personal data is redacted, not punished, and
# someone who writes about harming themselves needs help, not a suspension.
NOT_ABUSE = frozenset({"pii", "self-harm", "self-harm/intent", "self-harm/instructions"})


@dataclass(frozen=True, kw_only=True)
class RunSubject:
    """Which run a check belongs to, for the decision event: its ids, the turn checked, its owner's org."""

    run_id: str
    conversation_id: str
    turn_seq: int
    org_id: str


@dataclass(frozen=True, kw_only=True)
class InputScreening:
    """The input stage's outcome for the user turn."""

    prompt_text: str  # what the prompt carries: the turn as written, or redacted
    refusal: str | None = None  # the answer the user gets instead of a model's, when the stage refused
    decision: SafetyDecision | None = None  # None: the org's policy checks no input

    @property
    def redacted(self) -> bool:
        return self.decision is not None and self.decision.action == "redact"

    @property
    def violations(self) -> tuple[str, ...]:
        """The categories that make this turn the user's violation for governance (`flagged_input`); empty: none."""
        return abuse_categories(self.decision) if self.decision is not None else ()


@dataclass(frozen=True, kw_only=True)
class ContextScreening:
    """The context stage's outcome for a set of subjects (chunk ids, call ids)."""

    fenced: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    decisions: tuple[SafetyDecision, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ToolScreening:
    """The tool stage's outcome for one call: the reason it is refused (None: it may go on)."""

    refusal: str | None = None
    decision: SafetyDecision | None = None


class SafetyStages:
    """The stages of every run, under the policies `checks` holds; also the inference worker's `OutputSafety`.

    `output_checks` (same policies) serve the output stage when its classifiers differ (the LLM judge asked
    about an assistant's answer rather than a user's message); by default, `checks`.
    """

    def __init__(
        self,
        *,
        checks: SafetyChecks,
        output_checks: SafetyChecks | None = None,
        clock: Callable[[], datetime] = utc_now,
        window_chars: int = DEFAULT_WINDOW_CHARS,
        overlap_chars: int = DEFAULT_OVERLAP_CHARS,
        remembered_turns: int = 10_000,
    ) -> None:
        self._checks = checks
        # The output stage may need its own classifiers: a judge that reads the text as the assistant's answer.
        self._output_checks = output_checks or checks
        self._clock = clock
        self._window_chars = window_chars
        self._overlap_chars = overlap_chars
        # (org, digest of the text) -> the text as a prompt may carry it, or None when its input check refused it.
        self._earlier: OrderedDict[tuple[str, bytes], str | None] = OrderedDict()
        self._remembered_turns = remembered_turns

    @property
    def policies(self) -> SafetyPolicies:
        return self._checks.policies

    def runs(self, stage: Stage, org_id: str) -> bool:
        """Whether `org_id`'s policy checks anything at `stage`."""
        return bool(self._checks.policies.for_org(org_id).stage(stage).classifiers)

    # -- input -------------------------------------------------------------------------------------

    async def input(self, text: str, *, subject: RunSubject) -> InputScreening:
        """The user turn `subject.turn_seq` checked before its prompt is built."""
        if not self.runs("input", subject.org_id):
            return InputScreening(prompt_text=text)
        decision = await self._checks.check("input", text, org_id=subject.org_id)
        screening = InputScreening(
            prompt_text=redact(text, decision.redactions) if decision.action == "redact" else text,
            refusal=decision.reason if decision.action == "refuse" else None,
            decision=self._event(decision, subject),
        )
        self._remember(subject.org_id, text, None if screening.refusal is not None else screening.prompt_text)
        return screening

    async def earlier(self, text: str, *, org_id: str) -> str | None:
        """An earlier user turn as a later prompt may carry it: redacted as its input check did, None if it refused.

        Checked again (without a decision: that was recorded when the turn was asked), once per process and text.
        """
        if not self.runs("input", org_id):
            return text
        key = (org_id, _digest(text))
        if key in self._earlier:
            self._earlier.move_to_end(key)
            return self._earlier[key]
        decision = await self._checks.check("input", text, org_id=org_id)
        carried = None if decision.action == "refuse" else redact(text, decision.redactions)
        self._remember(org_id, text, carried)
        return carried

    async def redacted(self, text: str, *, org_id: str) -> str:
        """Text derived from earlier turns (the rolling summary) with what the input stage would redact in it redacted."""
        if not self.runs("input", org_id):
            return text
        key = (org_id, _digest("summary\x00" + text))
        if key not in self._earlier:
            decision = await self._checks.check("input", text, org_id=org_id)
            self._remember_key(key, redact(text, decision.redactions))
        return self._earlier[key] or ""

    def _remember(self, org_id: str, text: str, carried: str | None) -> None:
        self._remember_key((org_id, _digest(text)), carried)

    def _remember_key(self, key: tuple[str, bytes], carried: str | None) -> None:
        self._earlier[key] = carried
        self._earlier.move_to_end(key)
        while len(self._earlier) > self._remembered_turns:
            self._earlier.popitem(last=False)

    # -- context -----------------------------------------------------------------------------------

    async def context(self, subjects: Sequence[tuple[str, str]], *, subject: RunSubject) -> ContextScreening:
        """Each `(id, text)` (a retrieved chunk, a tool result) checked before it enters the prompt, all at once."""
        if not subjects or not self.runs("context", subject.org_id):
            return ContextScreening()
        decisions = await asyncio.gather(
            *(self._checks.check("context", text, org_id=subject.org_id) for _, text in subjects)
        )
        return ContextScreening(
            fenced=tuple(name for (name, _), decision in zip(subjects, decisions) if decision.action == "fence"),
            dropped=tuple(name for (name, _), decision in zip(subjects, decisions) if decision.action == "drop"),
            decisions=tuple(
                self._event(decision, subject, subject=name) for (name, _), decision in zip(subjects, decisions)
            ),
        )

    # -- tool --------------------------------------------------------------------------------------

    async def tool_call(self, arguments: str, *, call_id: str, subject: RunSubject) -> ToolScreening:
        """A tool call's arguments checked before the call is requested."""
        if not self.runs("tool", subject.org_id):
            return ToolScreening()
        decision = await self._checks.check("tool", arguments, org_id=subject.org_id)
        return ToolScreening(
            refusal=decision.reason if decision.action == "refuse" else None,
            decision=self._event(decision, subject, subject=call_id),
        )

    # -- output (the inference worker's port) ------------------------------------------------------

    def watch(self, request: InferenceRequested, *, actor: Actor) -> _OutputWatch | _Unwatched:
        """An `OutputWatch` of one model step's answer under the run owner's org's policy."""
        if not self.runs("output", actor.org_id):
            return _Unwatched()
        subject = RunSubject(
            run_id=request.run_id, conversation_id=request.conversation_id, turn_seq=request.turn_seq, org_id=actor.org_id
        )
        windows = StreamWindows(window_chars=self._window_chars, overlap_chars=self._overlap_chars)
        return _OutputWatch(stages=self, subject=subject, windows=windows, step=request.step)

    async def _output(self, text: str, *, subject: RunSubject, streaming: bool, name: str | None) -> OutputVerdict:
        decision = await self._output_checks.check("output", text, org_id=subject.org_id, streaming=streaming)
        match decision.action:
            case "redact":
                stored = redact(text, decision.redactions)
            case "replace" | "stop":
                stored = decision.reason
            case _:
                stored = text
        if streaming and decision.action == "redact":
            stored = text  # a window's redaction changes nothing on the stream; the whole answer's check redacts
        recorded = None if streaming and decision.action == "allow" else self._event(decision, subject, subject=name)
        return OutputVerdict(action=decision.action, text=stored, reason=decision.reason, decision=recorded)

    def _event(self, decision: Decision, run: RunSubject, *, subject: str | None = None) -> SafetyDecision:
        return decision.event(
            run_id=run.run_id, conversation_id=run.conversation_id, turn_seq=run.turn_seq, decided_at=self._clock(),
            subject=subject,
        )


class _OutputWatch:
    """One step's answer: a check per window while it streams, then the check of the whole."""

    def __init__(self, *, stages: SafetyStages, subject: RunSubject, windows: StreamWindows, step: int) -> None:
        self._stages = stages
        self._subject = subject
        self._windows = windows
        self._prefix = f"step:{step}:" if step > 1 else ""

    async def delta(self, text: str) -> OutputVerdict | None:
        window = self._windows.push(text)
        if window is None:
            return None
        name = f"{self._prefix}window:{self._windows.windows}"
        return await self._stages._output(window, subject=self._subject, streaming=True, name=name)

    async def answer(self, text: str) -> OutputVerdict:
        return await self._stages._output(text, subject=self._subject, streaming=False, name=None)


class _Unwatched:
    """The output stage of an org whose policy checks no output: everything streams and is stored as it is."""

    async def delta(self, text: str) -> OutputVerdict | None:
        return None

    async def answer(self, text: str) -> OutputVerdict:
        return OutputVerdict(action="allow", text=text)


def abuse_categories(decision: SafetyDecision) -> tuple[str, ...]:
    """The categories over their threshold, with an action other than allow, that count as abuse.

    Any action counts (flag, redact, refuse): the policy said the category matters. Not `pii` or self-harm
    (`NOT_ABUSE`), and not a refusal because a classifier failed closed (no category triggered it).
    """
    return tuple(category for category in decision.triggered if category not in NOT_ABUSE)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
