"""The pure decision: given a policy, when the classifiers say this, then this action, reason and record.

Properties: the action is the strictest any over-threshold category asks for; a failed classifier that
fails closed forces the stage's strictest action, one that fails open changes nothing and is named.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.catalog import EVENT_TYPES
from events.safety import SAFETY_ACTIONS, SAFETY_CATEGORIES, CategoryScore, SafetyDecision
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from processors.safety.classifiers import Classification, ClassifierFailure, ClassifierResults, Span
from processors.safety.decision import FAIL_CLOSED_ACTIONS, FAIL_CLOSED_REASON, decide, strictest
from processors.safety.policies import STAGE_ACTIONS, STAGES, CategoryRule, SafetyPolicy, StagePolicy

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def policy(stage: str = "input", *, fail: str = "closed", message: str = "Not that.", **rules: CategoryRule) -> SafetyPolicy:
    rules = {category.replace("__", "/"): rule for category, rule in rules.items()}
    return SafetyPolicy(
        policy_id="acme", version="v9",
        stages={stage: StagePolicy(classifiers=("a", "b"), rules=rules, fail=fail, message=message)},
    )


def results(*classifications: Classification, failures: tuple[ClassifierFailure, ...] = ()) -> ClassifierResults:
    ran = tuple(c.classifier for c in classifications) + tuple(f.classifier for f in failures)
    return ClassifierResults(classifications=classifications, failures=failures, ran=ran)


def scored(classifier: str, spans: tuple[Span, ...] = (), labels: tuple[str, ...] = (), **scores: float) -> Classification:
    return Classification(classifier=classifier, scores={k.replace("__", "/"): v for k, v in scores.items()}, spans=spans, labels=labels)


TIMED_OUT = ClassifierFailure(classifier="b", kind="timeout", detail="timed out after 50 ms")


# --- given / when / then ------------------------------------------------------------------------------


def test_nothing_over_a_threshold_is_allowed_with_every_score_recorded() -> None:
    decision = decide("input", results(scored("a", harassment=0.3, pii=0.1)), policy(harassment=CategoryRule(threshold=0.8, action="refuse")))
    assert decision.action == "allow"
    assert (decision.triggered, decision.reason) == ((), "")
    assert decision.categories == (CategoryScore(category="harassment", score=0.3), CategoryScore(category="pii", score=0.1))
    assert (decision.policy_id, decision.policy_version, decision.classifiers) == ("acme", "v9", ("a",))


def test_the_highest_score_of_any_classifier_counts() -> None:
    decision = decide(
        "input", results(scored("a", harassment=0.3), scored("b", harassment=0.85)), policy(harassment=CategoryRule(threshold=0.8, action="refuse"))
    )
    assert decision.action == "refuse"
    assert decision.categories == (CategoryScore(category="harassment", score=0.85),)


def test_a_refusal_says_the_rules_reason_else_the_stages_message() -> None:
    rules = {"harassment": CategoryRule(threshold=0.5, action="refuse", reason="Keep it civil."), "hate": CategoryRule(threshold=0.5, action="refuse")}
    assert decide("input", results(scored("a", harassment=0.9)), policy(**rules)).reason == "Keep it civil."
    assert decide("input", results(scored("a", hate=0.9)), policy(**rules)).reason == "Not that."


def test_the_strictest_action_wins_and_every_triggered_category_is_named() -> None:
    decision = decide(
        "context",
        results(scored("a", labels=("instruction_override",), prompt_injection=0.9), scored("b", harassment=0.7)),
        policy("context", prompt_injection=CategoryRule(threshold=0.5, action="fence"), harassment=CategoryRule(threshold=0.5, action="drop")),
    )
    assert decision.action == "drop"
    assert decision.triggered == ("prompt_injection", "harassment")
    assert decision.signals == ("a:instruction_override",)
    assert decision.reason == "prompt_injection 0.90 >= 0.5: fence; harassment 0.70 >= 0.5: drop"


def test_redaction_points_at_the_spans_over_the_threshold() -> None:
    email = Span(start=0, end=5, label="EMAIL_ADDRESS", score=1.0)
    weak_phone = Span(start=10, end=20, label="PHONE_NUMBER", score=0.4)
    decision = decide("input", results(scored("a", spans=(email, weak_phone), pii=1.0)), policy(pii=CategoryRule(threshold=0.5, action="redact")))
    assert decision.action == "redact"
    assert decision.redactions == (email,)


def test_redaction_with_no_spans_leaves_the_text_and_says_so() -> None:
    decision = decide("output", results(scored("judge", labels=("S7",), pii=1.0)), policy("output", pii=CategoryRule(threshold=0.5, action="redact")))
    assert (decision.action, decision.redactions) == ("redact", ())
    assert decision.reason.endswith("nothing to redact: no spans point at it")


def test_a_rule_that_allows_triggers_nothing() -> None:
    decision = decide("input", results(scored("a", pii=1.0)), policy(pii=CategoryRule(threshold=0.1, action="allow")))
    assert (decision.action, decision.triggered) == ("allow", ())


def test_a_classifier_that_fails_closed_refuses_the_input_and_says_why() -> None:
    decision = decide("input", results(scored("a", harassment=0.0), failures=(TIMED_OUT,)), policy(fail="closed"))
    assert decision.action == "refuse"
    assert (decision.fail_mode, decision.reason) == ("closed", FAIL_CLOSED_REASON)
    assert decision.failures == (TIMED_OUT,)
    assert decision.classifiers == ("a", "b")


def test_a_classifier_that_fails_open_is_decided_without_and_named() -> None:
    decision = decide("input", results(scored("a", harassment=0.0), failures=(TIMED_OUT,)), policy(fail="open"))
    assert (decision.action, decision.fail_mode) == ("allow", "open")
    assert decision.reason == "fail-open, decided without b: timed out after 50 ms"


def test_a_classifiers_own_fail_mode_beats_the_stages() -> None:
    from processors.safety.policies import ClassifierSettings

    open_judge = SafetyPolicy(
        policy_id="acme", version="v9", stages={"input": StagePolicy(classifiers=("b",), fail="closed")},
        classifier_settings={"b": ClassifierSettings(fail="open")},
    )
    assert decide("input", results(failures=(TIMED_OUT,)), open_judge).action == "allow"


def test_while_streaming_replace_is_stop_and_at_the_end_it_is_replace() -> None:
    rules = {"harassment": CategoryRule(threshold=0.8, action="replace", reason="Withheld.")}
    answer = results(scored("a", harassment=0.95))
    assert decide("output", answer, policy("output", **rules), streaming=True).action == "stop"
    final = decide("output", answer, policy("output", **rules))
    assert (final.action, final.reason, final.user_facing) == ("replace", "Withheld.", True)


def test_fail_closed_while_streaming_stops() -> None:
    decision = decide("output", results(failures=(TIMED_OUT,)), policy("output"), streaming=True)
    assert (decision.action, decision.reason) == ("stop", FAIL_CLOSED_REASON)


def test_a_stage_without_a_policy_allows() -> None:
    assert decide("tool", results(scored("a", prompt_injection=1.0)), policy("input")).action == "allow"


def test_the_decision_becomes_its_event_and_survives_the_codec() -> None:
    decision = decide(
        "input",
        results(scored("a", labels=("EMAIL_ADDRESS",), pii=1.0, harassment=0.2), failures=(TIMED_OUT,)),
        policy(fail="open", pii=CategoryRule(threshold=0.5, action="redact")),
    )
    event = decision.event(run_id="run_1", conversation_id="conv_1", turn_seq=3, decided_at=NOW, subject="turn:3")
    assert event == SafetyDecision(
        run_id="run_1", conversation_id="conv_1", turn_seq=3, stage="input", action="redact",
        categories=(CategoryScore(category="pii", score=1.0), CategoryScore(category="harassment", score=0.2)),
        triggered=("pii",), classifiers=("a", "b"), signals=("a:EMAIL_ADDRESS",), policy_id="acme", policy_version="v9",
        reason=decision.reason, subject="turn:3", failures=("b: timed out after 50 ms",), fail_mode="open", decided_at=NOW,
    )
    codec = AvroCodec(payload_types=EVENT_TYPES)
    envelope = Envelope.wrap(event, key="run_1", actor=Actor(user_id="u", org_id="acme", workspace_id="w"), occurred_at=NOW)
    assert codec.decode(codec.encode(envelope)) == envelope


def test_strictest() -> None:
    assert strictest([]) == "allow"
    assert strictest(["flag", "refuse", "redact"]) == "refuse"
    assert strictest(["replace", "stop"]) == "stop"


def test_each_stages_actions_are_in_order_of_strictness() -> None:
    for stage in STAGES:
        ranks = [SAFETY_ACTIONS.index(action) for action in STAGE_ACTIONS[stage]]
        assert ranks == sorted(ranks)
        assert STAGE_ACTIONS[stage][-1] == FAIL_CLOSED_ACTIONS[stage]


# --- properties -----------------------------------------------------------------------------------------


@st.composite
def situations(draw):
    stage = draw(st.sampled_from(STAGES))
    categories = draw(st.lists(st.sampled_from(SAFETY_CATEGORIES), unique=True, max_size=6))
    rules = {
        category: CategoryRule(threshold=draw(st.floats(0, 1)), action=draw(st.sampled_from(STAGE_ACTIONS[stage])))
        for category in categories
    }
    classifications = tuple(
        Classification(
            classifier=f"c{index}",
            scores=draw(st.dictionaries(st.sampled_from(SAFETY_CATEGORIES), st.floats(0, 1), max_size=5)),
        )
        for index in range(draw(st.integers(0, 3)))
    )
    failed = draw(st.lists(st.sampled_from(["j1", "j2"]), unique=True))
    failures = tuple(ClassifierFailure(classifier=name, kind="timeout", detail="timed out after 10 ms") for name in failed)
    fail = draw(st.sampled_from(["open", "closed"]))
    chosen_policy = SafetyPolicy(policy_id="p", version="1", stages={stage: StagePolicy(rules=rules, fail=fail)})
    streaming = draw(st.booleans())
    return stage, ClassifierResults(classifications=classifications, failures=failures), chosen_policy, streaming


def _expected_by_rules(stage, results_, chosen_policy) -> str:
    rules = chosen_policy.stage(stage).rules
    asked = ["allow"]
    for classification in results_.classifications:
        for category, score in classification.scores.items():
            if category in rules and score >= rules[category].threshold:
                asked.append(rules[category].action)
    return max(asked, key=SAFETY_ACTIONS.index)


@given(situations())
def test_the_action_is_the_strictest_any_over_threshold_category_asks_for(situation) -> None:
    stage, results_, chosen_policy, streaming = situation
    decision = decide(stage, results_, chosen_policy, streaming=streaming)
    expected = _expected_by_rules(stage, results_, chosen_policy)
    if results_.failures and chosen_policy.stage(stage).fail == "closed":
        expected = FAIL_CLOSED_ACTIONS[stage]  # the stage's strictest: nothing can ask for more
    if streaming and stage == "output" and expected == "replace":
        expected = "stop"
    assert decision.action == expected
    assert decision.action in (*STAGE_ACTIONS[stage], "stop")


@given(situations())
def test_failures_are_always_named_with_their_fail_mode(situation) -> None:
    stage, results_, chosen_policy, streaming = situation
    decision = decide(stage, results_, chosen_policy, streaming=streaming)
    assert decision.failures == results_.failures
    if not results_.failures:
        assert decision.fail_mode is None
    elif chosen_policy.stage(stage).fail == "closed":
        assert decision.fail_mode == "closed"
        assert decision.action in ("refuse", "drop", "replace", "stop")
    else:
        assert decision.fail_mode == "open"
        assert decision.action == decide(stage, ClassifierResults(classifications=results_.classifications), chosen_policy,
                                         streaming=streaming).action
        if not decision.user_facing:
            assert "fail-open, decided without" in decision.reason


@given(situations())
def test_a_user_facing_action_always_has_a_reason(situation) -> None:
    stage, results_, chosen_policy, streaming = situation
    decision = decide(stage, results_, chosen_policy, streaming=streaming)
    if decision.user_facing:
        assert decision.reason


@pytest.mark.parametrize("stage", STAGES)
def test_fail_closed_is_the_stages_strictest_action(stage: str) -> None:
    assert FAIL_CLOSED_ACTIONS[stage] == STAGE_ACTIONS[stage][-1]
