"""The pure decision of a safety stage: classifier results + the org's policy -> one action, a reason, the scores.

`decide` takes, per category, the highest score any classifier gave; each category at or over its rule's
threshold asks for the rule's action, and the strictest asked for wins (`SAFETY_ACTIONS` is ordered
mildest first). A failed classifier follows its fail mode: "closed" forces the stage's strictest action
(input refuse, context drop, tool refuse, output replace), "open" decides without it, and either way the
decision names the failures. While the answer streams (`streaming=True`), the output stage's `replace`
is `stop`: the run stops there and the stored answer is the fallback.

`redact` acts on spans only: a category that asks for it with no spans to point at (the LLM judge's
privacy hazard) leaves the text as it is, and the reason says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from events.safety import SAFETY_ACTIONS, CategoryScore, SafetyDecision
from processors.safety.classifiers import ClassifierFailure, ClassifierResults, Span
from processors.safety.policies import DEFAULT_MESSAGES, Action, CategoryRule, FailMode, SafetyPolicy, Stage, StagePolicy

_STRICTNESS = {action: rank for rank, action in enumerate(SAFETY_ACTIONS)}
# What a classifier that fails closed does at each stage: the stage's strictest action.
FAIL_CLOSED_ACTIONS: dict[Stage, Action] = {"input": "refuse", "context": "drop", "tool": "refuse", "output": "replace"}
# The actions the user sees as the answer (or as the end of the stream): they carry a reason for a person.
USER_FACING_ACTIONS = frozenset({"refuse", "replace", "stop"})
FAIL_CLOSED_REASON = "A safety check could not run, so this was held back. Please try again."


def strictest(actions: Iterable[Action]) -> Action:
    """The strictest of `actions` ("allow" for none)."""
    return max(actions, key=_STRICTNESS.__getitem__, default="allow")


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What a stage does with one text, and everything the `SafetyDecision` event records about why."""

    stage: Stage
    action: Action
    reason: str  # for the user when the action is user-facing (refuse, replace, stop); a note for a reviewer otherwise
    categories: tuple[CategoryScore, ...]  # every category scored, highest first
    triggered: tuple[str, ...]  # the categories at or over their threshold (with an action other than allow)
    redactions: tuple[Span, ...] = ()  # with `redact`: the spans to replace (`pii.redact`)
    classifiers: tuple[str, ...] = ()
    signals: tuple[str, ...] = ()  # `classifier:label` of what fired
    failures: tuple[ClassifierFailure, ...] = ()
    fail_mode: FailMode | None = None
    policy_id: str
    policy_version: str

    @property
    def user_facing(self) -> bool:
        return self.action in USER_FACING_ACTIONS

    def event(
        self, *, run_id: str, conversation_id: str, turn_seq: int, decided_at: datetime, subject: str | None = None
    ) -> SafetyDecision:
        """The decision as the event a stage appends (topic `run-events`, keyed by run id)."""
        return SafetyDecision(
            run_id=run_id,
            conversation_id=conversation_id,
            turn_seq=turn_seq,
            stage=self.stage,
            action=self.action,
            categories=self.categories,
            triggered=self.triggered,
            classifiers=self.classifiers,
            signals=self.signals,
            policy_id=self.policy_id,
            policy_version=self.policy_version,
            reason=self.reason,
            subject=subject,
            failures=tuple(str(failure) for failure in self.failures),
            fail_mode=self.fail_mode,
            decided_at=decided_at,
        )


def decide(stage: Stage, results: ClassifierResults, policy: SafetyPolicy, *, streaming: bool = False) -> Decision:
    """The action `policy` asks for at `stage`, given what the classifiers said (and which of them failed)."""
    stage_policy = policy.stage(stage)
    scores: dict[str, float] = {}
    for classification in results.classifications:
        for category, score in classification.scores.items():
            scores[category] = max(score, scores.get(category, 0.0))
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    triggered = tuple(
        category
        for category, score in ranked
        if (rule := stage_policy.rules.get(category)) is not None and score >= rule.threshold and rule.action != "allow"
    )
    asked = strictest(stage_policy.rules[category].action for category in triggered)

    closed = tuple(failure for failure in results.failures if policy.fail_mode(stage, failure.classifier) == "closed")
    fail_mode: FailMode | None = ("closed" if closed else "open") if results.failures else None
    action = strictest((asked, FAIL_CLOSED_ACTIONS[stage])) if closed else asked

    redactions: tuple[Span, ...] = ()
    if action == "redact":
        redactions = tuple(
            span
            for classification in results.classifications
            for span in classification.spans
            if (rule := stage_policy.rules.get(span.category)) is not None and rule.action == "redact" and span.score >= rule.threshold
        )
    if action in USER_FACING_ACTIONS:
        reason = _words_for_the_user(stage, stage_policy, triggered, asked) if action == asked else FAIL_CLOSED_REASON
    else:
        reason = _note_for_a_reviewer(
            triggered, scores, stage_policy.rules, results.failures, closed, nothing_to_redact=action == "redact" and not redactions
        )
    return Decision(
        stage=stage,
        action="stop" if streaming and stage == "output" and action == "replace" else action,
        reason=reason,
        categories=tuple(CategoryScore(category=category, score=score) for category, score in ranked),
        triggered=triggered,
        redactions=redactions,
        classifiers=results.ran,
        signals=tuple(
            f"{classification.classifier}:{label}" for classification in results.classifications for label in classification.labels
        ),
        failures=results.failures,
        fail_mode=fail_mode,
        policy_id=policy.policy_id,
        policy_version=policy.version,
    )


def _words_for_the_user(stage: Stage, stage_policy: StagePolicy, triggered: tuple[str, ...], asked: Action) -> str:
    """The own reason of the first triggered rule that asked for the action, else the stage's message."""
    rules = stage_policy.rules
    own = (rules[category].reason for category in triggered if rules[category].action == asked and rules[category].reason)
    return next(own, stage_policy.message or DEFAULT_MESSAGES[stage])


def _note_for_a_reviewer(
    triggered: tuple[str, ...],
    scores: Mapping[str, float],
    rules: Mapping[str, CategoryRule],
    failures: tuple[ClassifierFailure, ...],
    closed: tuple[ClassifierFailure, ...],
    *,
    nothing_to_redact: bool,
) -> str:
    """For an action the user does not see: what was over which threshold, and what failed."""
    notes = [f"{category} {scores[category]:.2f} >= {rules[category].threshold:g}: {rules[category].action}" for category in triggered]
    if nothing_to_redact:
        notes.append("nothing to redact: no spans point at it")
    if failures:
        failed = "; ".join(str(failure) for failure in failures)
        notes.append(f"fail-closed: {failed}" if closed else f"fail-open, decided without {failed}")
    return "; ".join(notes)
