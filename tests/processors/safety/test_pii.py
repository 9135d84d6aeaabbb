"""PII by Presidio's pattern recognizers, offline: real inputs found with their offsets, and redacted."""

from __future__ import annotations

import pytest

from processors.safety.pii import PiiClassifier, build_analyzer
from processors.safety.redaction import redact

TEXT = (
    "Mail me at jane.doe@example.com or call my phone 212-555-0123. My card is 4111 1111 1111 1111, "
    "IBAN GB82 WEST 1234 5698 7654 32, server 192.168.1.20, and my ssn is 536-22-1234."
)


async def test_each_kind_of_pii_is_found_where_it_is(pii_classifier: PiiClassifier) -> None:
    classification = await pii_classifier.classify(TEXT)
    found = {span.label: TEXT[span.start : span.end] for span in classification.spans}
    assert found == {
        "EMAIL_ADDRESS": "jane.doe@example.com",
        "PHONE_NUMBER": "212-555-0123",
        "CREDIT_CARD": "4111 1111 1111 1111",
        "IBAN_CODE": "GB82 WEST 1234 5698 7654 32",
        "IP_ADDRESS": "192.168.1.20",
        "US_SSN": "536-22-1234",
    }
    assert classification.scores == {"pii": 1.0}
    assert classification.labels == tuple(sorted(found))
    assert all(span.category == "pii" for span in classification.spans)


async def test_context_words_raise_a_weak_match(pii_classifier: PiiClassifier) -> None:
    """A phone number's pattern alone is weak (0.4); the word "phone" beside it makes it likely."""
    near = await pii_classifier.classify("my phone is 212-555-0123")
    alone = await pii_classifier.classify("the code 212-555-0123 was printed")
    assert near.scores["pii"] > alone.scores["pii"] >= 0.4


async def test_found_pii_is_redacted_to_tags(pii_classifier: PiiClassifier) -> None:
    classification = await pii_classifier.classify(TEXT)
    assert redact(TEXT, classification.spans) == (
        "Mail me at <EMAIL_ADDRESS> or call my phone <PHONE_NUMBER>. My card is <CREDIT_CARD>, "
        "IBAN <IBAN_CODE>, server <IP_ADDRESS>, and my ssn is <US_SSN>."
    )


@pytest.mark.parametrize(
    "text",
    [
        "The quarterly report covers revenue, margins and the outlook for next year.",
        "Version 3.12.1 shipped on 2024-10-07 with 45 fixes.",
        "Card 4111 1111 1111 1112 fails the Luhn check.",  # not a valid card number
        "Write to support at our office.",
    ],
)
async def test_text_without_pii_scores_zero(pii_classifier: PiiClassifier, text: str) -> None:
    classification = await pii_classifier.classify(text)
    assert classification.scores == {"pii": 0.0}
    assert classification.spans == ()


async def test_an_international_number_is_found_outside_the_phone_regions(pii_classifier: PiiClassifier) -> None:
    classification = await pii_classifier.classify("Call our Berlin office on +49 30 901820 tomorrow")
    assert [span.label for span in classification.spans] == ["PHONE_NUMBER"]


def test_an_e_mail_is_validated_without_the_network() -> None:
    """tldextract's default fetches the public suffix list; the analyzer here reads the snapshot it ships."""
    analyzer = build_analyzer(entities=("EMAIL_ADDRESS",), context_words=False)
    results = analyzer.analyze(text="write to ops@example.co.uk or x@localhost", language="en", entities=["EMAIL_ADDRESS"])
    assert [(result.start, result.end) for result in results] == [(9, 26)]


def test_an_entity_without_a_pattern_recognizer_is_refused() -> None:
    with pytest.raises(ValueError, match="no pattern recognizer for PERSON"):
        build_analyzer(entities=("EMAIL_ADDRESS", "PERSON"))
