"""Citations, pure: the markers an answer cites become citations, each with its best quote."""

from events.values import Source
from inference.citations import best_quote, citations_in


def source(marker: int, text: str) -> Source:
    return Source(marker=marker, file_id=f"file_{marker}", chunk_id=f"chunk_{marker}", title=f"Doc {marker}", location="", text=text)


def test_citations_follow_the_markers_in_the_answer_once_each_with_the_best_quote() -> None:
    sources = (
        source(1, "The moon pulls the sea. Tides rise twice a day."),
        source(2, "Neap tides are weak. Spring tides are strong."),
        source(3, "Unused passage."),
    )
    answer = "Spring tides are strong [2]. The sea rises twice a day [1][2]. Also [9] and [1, 3]."
    citations = citations_in(answer, sources)
    assert [(c.marker, c.chunk_id) for c in citations] == [(2, "chunk_2"), (1, "chunk_1"), (3, "chunk_3")]
    assert citations[0].quote == "Spring tides are strong."
    assert citations[1].quote == "Tides rise twice a day."
    assert citations_in("no markers here", sources) == ()


def test_a_quote_is_a_sentence_of_the_passage_kept_short() -> None:
    long_sentence = "word " * 200
    assert best_quote(long_sentence, "word").endswith("…") and len(best_quote(long_sentence, "word")) == 300
    assert best_quote("", "anything") == ""


def test_a_quote_never_runs_across_paragraphs_or_list_items() -> None:
    passage = "--verbose\n\nPrint every file as it is copied.\n\n- --dry-run shows what would be copied\n- --force overwrites files"
    assert best_quote(passage, "The verbose option prints each file [1].") == "Print every file as it is copied."
    assert best_quote(passage, "Use --force to overwrite files [1].") == "- --force overwrites files"
    assert "\n" not in best_quote("An option\nwrapped over lines. Another sentence.", "option wrapped")


def test_the_quote_is_the_sentence_that_supports_the_claim_not_the_first() -> None:
    passage = (
        "The router has four ports. It supports WPA3 encryption on every band. Resetting it restores the factory settings, "
        "including the admin password."
    )
    assert best_quote(passage, "A reset brings back the factory settings [1].") == (
        "Resetting it restores the factory settings, including the admin password."
    )
    assert best_quote(passage, "Something unrelated [1].") == "The router has four ports."  # no support: the first
