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
