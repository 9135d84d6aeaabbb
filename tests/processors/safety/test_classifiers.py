"""The classifier runner: every classifier within its own timeout, and a failure reported per classifier, never raised."""

from __future__ import annotations

import asyncio
import time

import pytest

from processors.safety.classifiers import Classification, ClassifierFailure, run_classifiers


class Scripted:
    """A classifier that answers `scores` after `delay_s`, or raises `error`."""

    def __init__(self, name: str, scores: dict | None = None, *, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self.name = name
        self.scores = scores or {}
        self.delay_s = delay_s
        self.error = error
        self.cancelled = False

    async def classify(self, text: str) -> Classification:
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return Classification(classifier=self.name, scores=self.scores)


async def test_every_classification_comes_back_in_order_with_the_names_that_ran() -> None:
    results = await run_classifiers(
        [Scripted("a", {"harassment": 0.2}), Scripted("b", {"pii": 1.0})], "text", timeout_s=1.0
    )
    assert [c.classifier for c in results.classifications] == ["a", "b"]
    assert results.failures == ()
    assert results.ran == ("a", "b")


async def test_a_classifier_that_raises_is_a_failure_and_the_others_still_answer() -> None:
    results = await run_classifiers(
        [Scripted("broken", error=RuntimeError("model file missing\nsecond line")), Scripted("fine", {"pii": 0.0})],
        "text", timeout_s=1.0,
    )
    assert results.failures == (ClassifierFailure(classifier="broken", kind="error", detail="RuntimeError: model file missing"),)
    assert [c.classifier for c in results.classifications] == ["fine"]
    assert results.ran == ("broken", "fine")


async def test_a_slow_classifier_times_out_alone_and_is_cancelled() -> None:
    slow = Scripted("slow", {"hate": 1.0}, delay_s=5.0)
    started = time.monotonic()
    results = await run_classifiers([slow, Scripted("fast", {"pii": 0.1})], "text", timeout_s=0.05)
    assert time.monotonic() - started < 1.0
    assert results.failures == (ClassifierFailure(classifier="slow", kind="timeout", detail="timed out after 50 ms"),)
    assert str(results.failures[0]) == "slow: timed out after 50 ms"
    assert [c.classifier for c in results.classifications] == ["fast"]
    assert slow.cancelled


async def test_each_classifier_may_have_its_own_timeout() -> None:
    results = await run_classifiers(
        [Scripted("judge", {"hate": 1.0}, delay_s=0.1), Scripted("regex", {"pii": 0.0}, delay_s=0.1)],
        "text", timeout_s=0.02, timeouts_s={"judge": 2.0},
    )
    assert [c.classifier for c in results.classifications] == ["judge"]
    assert [(f.classifier, f.kind) for f in results.failures] == [("regex", "timeout")]


@pytest.mark.parametrize(
    ("scores", "detail"),
    [
        ({"profanity": 0.9}, "scored an unknown category 'profanity'"),
        ({"hate": 1.5}, "scored 'hate' 1.5, not a number from 0 to 1"),
        ({"hate": float("nan")}, "scored 'hate' nan, not a number from 0 to 1"),
    ],
)
async def test_a_classification_outside_the_categories_or_range_is_a_failure(scores: dict, detail: str) -> None:
    results = await run_classifiers([Scripted("odd", scores)], "text", timeout_s=1.0)
    assert results.failures == (ClassifierFailure(classifier="odd", kind="error", detail=detail),)
    assert results.classifications == ()


async def test_no_classifiers_is_an_empty_result() -> None:
    results = await run_classifiers([], "text", timeout_s=1.0)
    assert (results.classifications, results.failures, results.ran) == ((), (), ())
