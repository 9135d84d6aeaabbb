"""Redaction: spans become tags naming their kind; overlaps become one tag."""

from __future__ import annotations

from processors.safety.classifiers import Span
from processors.safety.redaction import redact


def span(start: int, end: int, label: str, score: float = 1.0) -> Span:
    return Span(start=start, end=end, label=label, score=score)


def test_each_span_becomes_its_tag() -> None:
    text = "mail a@b.io or call 555-0100 now"
    assert redact(text, [span(20, 28, "PHONE_NUMBER"), span(5, 11, "EMAIL_ADDRESS")]) == "mail <EMAIL_ADDRESS> or call <PHONE_NUMBER> now"


def test_overlapping_spans_become_one_tag_named_by_the_highest_score() -> None:
    text = "ssn 078-05-1120 ok"
    assert redact(text, [span(4, 15, "PHONE_NUMBER", 0.4), span(4, 15, "US_SSN", 0.85)]) == "ssn <US_SSN> ok"
    assert redact(text, [span(4, 10, "A", 0.9), span(8, 15, "B", 0.5)]) == "ssn <A> ok"


def test_no_spans_and_empty_or_outside_spans_leave_the_text() -> None:
    assert redact("nothing here", []) == "nothing here"
    assert redact("short", [span(3, 3, "X"), span(10, 20, "Y")]) == "short"
