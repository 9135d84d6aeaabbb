"""Profanity and insults (alt-profanity-check) scored as harassment: real sentences, long texts, the fast path."""

from __future__ import annotations

import pytest
from profanity_check import predict_prob

from processors.safety.profanity import ProfanityClassifier, segments

NEUTRAL = "The tide tables for the harbour are computed from the harmonic constituents of the moon and the sun."


@pytest.mark.parametrize(
    "text",
    [
        "You are a worthless idiot and everyone hates you.",
        "Shut up, you stupid moron.",
        "go to hell, you piece of shit",
    ],
)
async def test_a_harassing_sentence_scores_high(profanity_classifier: ProfanityClassifier, text: str) -> None:
    assert (await profanity_classifier.classify(text)).scores["harassment"] > 0.9


@pytest.mark.parametrize(
    "text",
    [NEUTRAL, "Thanks, the figures in the spreadsheet look right to me.", "Could you summarise the meeting notes?"],
)
async def test_a_neutral_sentence_scores_low(profanity_classifier: ProfanityClassifier, text: str) -> None:
    assert (await profanity_classifier.classify(text)).scores["harassment"] < 0.2


async def test_one_insult_in_a_long_polite_text_is_not_averaged_away(profanity_classifier: ProfanityClassifier) -> None:
    long_text = " ".join([NEUTRAL] * 30)
    assert (await profanity_classifier.classify(long_text)).scores["harassment"] < 0.2
    with_insult = " ".join([NEUTRAL] * 15 + ["You are a worthless idiot."] + [NEUTRAL] * 15)
    assert (await profanity_classifier.classify(with_insult)).scores["harassment"] > 0.9


async def test_empty_text_scores_zero(profanity_classifier: ProfanityClassifier) -> None:
    assert (await profanity_classifier.classify("   ")).scores == {"harassment": 0.0}


def test_the_fast_path_scores_exactly_as_the_package(profanity_classifier: ProfanityClassifier) -> None:
    texts = [NEUTRAL, "you idiot", "what the hell is this", "I will find you", "lovely weather"]
    ours = [profanity_classifier.scan(text).scores["harassment"] for text in texts]
    assert ours == pytest.approx([float(p) for p in predict_prob(texts)], abs=1e-6)


def test_segments_group_sentences_up_to_the_word_limit() -> None:
    assert segments("One two. Three four five. Six.", max_words=5) == ["One two. Three four five.", "Six."]
    assert segments(" ".join(str(n) for n in range(12)), max_words=5) == ["0 1 2 3 4", "5 6 7 8 9", "10 11"]
    assert segments("", max_words=5) == []
