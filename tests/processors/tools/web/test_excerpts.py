"""Which passage of a page is quoted for a query, pure."""

from __future__ import annotations

from processors.tools.web.excerpts import best_passage, query_terms

PARAGRAPHS = [
    "Coastal towns have printed tide tables for centuries.",
    "Tides are caused mainly by the gravity of the moon, which raises two bulges of water.",
    "The sun raises tides as well, less than half as strongly as the moon.",
    "The Bay of Fundy funnels the water into a range of sixteen metres.",
]


def test_query_terms_drop_common_words_and_one_common_ending() -> None:
    assert query_terms("What causes the tides of the ocean?") == {"caus", "tid", "ocean"}
    assert query_terms("caused tide landing landed") == {"caus", "tid", "land"}
    assert query_terms("glass lens a I") == {"glass", "len"}  # "-ss" is no ending; one letter is no term


def test_the_paragraph_sharing_most_query_words_is_quoted_with_what_follows_within_the_limit() -> None:
    passage = best_passage(PARAGRAPHS, "why does the moon cause tides", max_chars=160)
    assert passage is not None and passage.index == 1
    assert passage.text == PARAGRAPHS[1] + "\n\n" + PARAGRAPHS[2]
    assert len(passage.text) <= 160


def test_the_passage_never_passes_max_chars() -> None:
    passage = best_passage(PARAGRAPHS, "moon gravity", max_chars=100)
    assert passage is not None and passage.text == PARAGRAPHS[1]


def test_distinct_words_count_before_repeated_ones_and_earlier_wins_a_tie() -> None:
    paragraphs = ["moon moon moon moon", "the moon and the Fundy bay", "moon and Fundy"]
    passage = best_passage(paragraphs, "moon Fundy", max_chars=30)
    assert passage is not None and passage.index == 1


def test_a_page_that_shares_no_word_is_quoted_from_its_beginning() -> None:
    passage = best_passage(PARAGRAPHS, "sourdough starter", max_chars=60)
    assert passage is not None and passage.index == 0 and passage.text == PARAGRAPHS[0]


def test_a_long_paragraph_is_split_at_sentence_ends() -> None:
    long = " ".join(f"Sentence {number} is about nothing much at all." for number in range(40)) + " Here the moon shines."
    passage = best_passage([long], "moon", max_chars=200)
    assert passage is not None and "the moon shines" in passage.text and len(passage.text) <= 200
    assert passage.text.startswith("Sentence")  # whole sentences, from a sentence start


def test_a_sentence_longer_than_the_limit_is_cut_at_a_word() -> None:
    passage = best_passage(["word " * 500], "word", max_chars=100)
    assert passage is not None and len(passage.text) <= 100 and passage.text.endswith("…")


def test_no_text_no_passage() -> None:
    assert best_passage([], "moon") is None
    assert best_passage(["   "], "moon") is None
