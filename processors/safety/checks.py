"""A safety check: the classifiers an org's policy names for a stage, run on one text, then the pure decision.

The I/O shell around `decision.decide`: `SafetyChecks` holds the policies and the classifiers (built
at start by the composition root, keyed by the names the policies file uses) and answers one stage's
check of one text with a `Decision`, never an exception for a classifier's sake. Appending the
decision (`Decision.event(...)`) and acting on it (refuse, redact, fence, stop) is the caller's.
"""

from __future__ import annotations

from collections.abc import Mapping

from kernel import tracing
from processors.metrics import SAFETY_ACTIONS
from processors.safety.classifiers import Classifier, run_classifiers
from processors.safety.decision import Decision, decide
from processors.safety.policies import SafetyPolicies, Stage


class MissingClassifiers(ValueError):
    """The policies name classifiers that were not built (a role without the judge's pool, a typo)."""


class SafetyChecks:
    """Runs stage checks for any org against `policies`, with the classifiers by the names the policies use."""

    def __init__(self, *, policies: SafetyPolicies, classifiers: Mapping[str, Classifier]) -> None:
        missing = [name for name in policies.classifier_names() if name not in classifiers]
        if missing:
            raise MissingClassifiers(
                f"the safety policies run {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not set up; "
                f"classifiers set up: {', '.join(sorted(classifiers)) or 'none'}"
            )
        self.policies = policies
        self._classifiers = dict(classifiers)

    async def check(self, stage: Stage, text: str, *, org_id: str, streaming: bool = False) -> Decision:
        """`stage`'s decision about `text` under `org_id`'s policy (`streaming`: an output window, where replace is stop)."""
        policy = self.policies.for_org(org_id)
        stage_policy = policy.stage(stage)
        # A span per check, in the trace of the run being checked (the span in hand is its reaction's or generation's).
        attributes = {"turnlog.safety.stage": stage, "turnlog.safety.streaming": streaming}
        with tracing.span(f"safety {stage}", attributes=attributes) as checking:
            results = await run_classifiers(
                [self._classifiers[name] for name in stage_policy.classifiers],
                text,
                timeout_s=stage_policy.timeout_s,
                timeouts_s=policy.timeouts_s(stage),
            )
            decision = decide(stage, results, policy, streaming=streaming)
            if checking.is_recording():
                checking.set_attributes({
                    "turnlog.safety.action": decision.action, "turnlog.safety.triggered": decision.triggered,
                    "turnlog.safety.classifiers": tuple(stage_policy.classifiers),
                    "turnlog.safety.policy_version": decision.policy_version,
                })
        for category in decision.triggered or ("none",):
            SAFETY_ACTIONS.labels(stage=stage, action=decision.action, category=category).inc()
        return decision
