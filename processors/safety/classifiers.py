"""The classifier port, and the runner that applies several classifiers to one text without ever raising.

A classifier scores a text against some of the safety categories (`events.safety.SAFETY_CATEGORIES`),
0 to 1, and may point at the spans it found (PII: each entity with its offsets). Adapters: `pii.py`
(Presidio's pattern recognizers), `profanity.py` (alt-profanity-check), `injection.py` (heuristics),
`llm_judge.py` (a Llama Guard style model over an OpenAI-compatible endpoint).

`run_classifiers` gives each classifier its own timeout and reports a classifier that raised or ran
out of time as a `ClassifierFailure`, so the policy's fail-open or fail-closed choice decides what
that means (`decision.py`), never an exception halfway through a stage.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from events.safety import SAFETY_CATEGORIES

_KNOWN_CATEGORIES = frozenset(SAFETY_CATEGORIES)


@dataclass(frozen=True, kw_only=True)
class Span:
    """A stretch of the text a classifier points at: `text[start:end]` is an entity of kind `label` (`EMAIL_ADDRESS`)."""

    start: int
    end: int
    label: str
    score: float
    category: str = "pii"


@dataclass(frozen=True, kw_only=True)
class Classification:
    """One classifier's view of one text: a score per category it judged, the spans it found, the rules that fired."""

    classifier: str
    scores: Mapping[str, float]
    spans: tuple[Span, ...] = ()
    labels: tuple[str, ...] = ()  # what fired, in the classifier's own words: rule names, Llama Guard's S-codes


class Classifier(Protocol):
    """Scores a text against safety categories; slow or CPU-heavy work is the adapter's to move off the event loop."""

    name: str

    async def classify(self, text: str) -> Classification: ...


FailureKind = Literal["error", "timeout"]


@dataclass(frozen=True, kw_only=True)
class ClassifierFailure:
    """A classifier that gave no classification: it raised (`error`) or ran out of time (`timeout`)."""

    classifier: str
    kind: FailureKind
    detail: str

    def __str__(self) -> str:
        return f"{self.classifier}: {self.detail}"


@dataclass(frozen=True, kw_only=True)
class ClassifierResults:
    """What the classifiers of one check said, and which of them failed."""

    classifications: tuple[Classification, ...] = ()
    failures: tuple[ClassifierFailure, ...] = ()
    ran: tuple[str, ...] = ()  # every classifier asked, in order, failed ones included


async def run_classifiers(
    classifiers: Sequence[Classifier],
    text: str,
    *,
    timeout_s: float,
    timeouts_s: Mapping[str, float] | None = None,
) -> ClassifierResults:
    """Every classifier on `text` at once, each within its timeout (`timeouts_s[name]`, else `timeout_s`).

    Never raises for a classifier's sake: an exception, a timeout, or a classification naming a category
    that does not exist becomes a `ClassifierFailure`. Cancelling the caller cancels them all.
    """
    if not classifiers:
        return ClassifierResults()
    limits = [(timeouts_s or {}).get(classifier.name, timeout_s) for classifier in classifiers]
    outcomes = await asyncio.gather(
        *(_run_one(classifier, text, limit) for classifier, limit in zip(classifiers, limits, strict=True))
    )
    return ClassifierResults(
        classifications=tuple(outcome for outcome in outcomes if isinstance(outcome, Classification)),
        failures=tuple(outcome for outcome in outcomes if isinstance(outcome, ClassifierFailure)),
        ran=tuple(classifier.name for classifier in classifiers),
    )


async def _run_one(classifier: Classifier, text: str, timeout_s: float) -> Classification | ClassifierFailure:
    try:
        async with asyncio.timeout(timeout_s):
            classification = await classifier.classify(text)
    except TimeoutError:
        return ClassifierFailure(classifier=classifier.name, kind="timeout", detail=f"timed out after {_seconds(timeout_s)}")
    except Exception as error:  # any failure of an adapter is the policy's to judge, not the stage's to crash on
        detail = str(error).splitlines()[0][:200] if str(error) else ""
        return ClassifierFailure(
            classifier=classifier.name, kind="error", detail=f"{type(error).__name__}: {detail}" if detail else type(error).__name__
        )
    problem = _problem_with(classification)
    if problem:
        return ClassifierFailure(classifier=classifier.name, kind="error", detail=problem)
    return classification


def _problem_with(classification: object) -> str:
    if not isinstance(classification, Classification):
        return f"answered {type(classification).__name__}, not a Classification"
    for category, score in classification.scores.items():
        if category not in _KNOWN_CATEGORIES:
            return f"scored an unknown category {category!r}"
        if not isinstance(score, (int, float)) or not math.isfinite(score) or not 0.0 <= score <= 1.0:
            return f"scored {category!r} {score!r}, not a number from 0 to 1"
    return ""


def _seconds(value: float) -> str:
    return f"{value * 1000:g} ms" if value < 1 else f"{value:g} s"
