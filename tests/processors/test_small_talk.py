"""Small talk, pure: greetings and thanks are recognised; anything with a subject is a question."""

import pytest

from processors.small_talk import is_small_talk


@pytest.mark.parametrize("text", ["hi", "Hello!", "good morning", "Thanks, that helped!", "how are you doing today?", "bye", "ok"])
def test_greetings_and_thanks_are_small_talk(text: str) -> None:
    assert is_small_talk(text)


@pytest.mark.parametrize(
    "text",
    ["hello, how do I reset my password?", "What is the warranty period?", "thanks, and what about invoices?", "", "hi 42",
     "Why does my function's default list keep the items from earlier calls?"],
)
def test_a_question_with_a_subject_is_not(text: str) -> None:
    assert not is_small_talk(text)
