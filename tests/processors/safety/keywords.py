"""A deterministic classifier for wiring tests: a category scores 1.0 when one of its words is in the text.

Each occurrence is a span (labelled like a PII entity), so `redact` has something to replace. Loaded by
tests with `tests.conftest.load_test_module("keywords", beside=...)`.
"""

from __future__ import annotations

import re

from processors.safety.classifiers import Classification, Span
from processors.safety.policies import SafetyPolicies, parse_policies_file


class Keywords:
    """Scores each category 1.0 when any of its words occurs (case-insensitive), else 0.0; `calls` counts texts seen."""

    def __init__(self, name: str = "words", **words_by_category: tuple[str, ...]) -> None:
        self.name = name
        self.words = {category.replace("__", "/"): words for category, words in words_by_category.items()}
        self.calls: list[str] = []

    async def classify(self, text: str) -> Classification:
        self.calls.append(text)
        spans = tuple(
            Span(start=match.start(), end=match.end(), label=category.upper(), score=1.0, category=category)
            for category, words in self.words.items()
            for word in words
            for match in re.finditer(re.escape(word), text, flags=re.IGNORECASE)
        )
        scores = {category: 1.0 if any(span.category == category for span in spans) else 0.0 for category in self.words}
        return Classification(classifier=self.name, scores=scores, spans=spans, labels=tuple(span.label for span in spans))


def policies(text: str, *, known: tuple[str, ...] = ("words",)) -> SafetyPolicies:
    return parse_policies_file(text, source="policies.toml", known_classifiers=known)
