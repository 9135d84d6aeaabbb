"""Grounding, pure: relevance cut, numbered passages within a budget, and citations from markers."""

from events.values import Source
from processors.grounding import (
    GROUNDED_INSTRUCTIONS,
    NOTHING_FOUND_INSTRUCTIONS,
    best_quote,
    citations_in,
    grounding_message,
    numbered_sources,
    relevant,
)
from projections.search.index import SearchHit


def hit(chunk_id: str, text: str, *, bm25: int | None = None, similarity: float | None = None, location: str = "") -> SearchHit:
    return SearchHit(
        chunk_id=chunk_id, file_id=f"file_{chunk_id[0]}", org_id="o", workspace_id="w", owner_id="u", acl="workspace",
        title="Tides", location=location, ordinal=0, text=text, score=0.1, bm25_rank=bm25,
        vector_rank=1 if similarity is not None else None, similarity=similarity,
    )


def words(text: str) -> int:
    return len(text.split())


def test_only_lexical_matches_and_close_meanings_are_relevant() -> None:
    hits = [hit("a", "x", bm25=1, similarity=0.05), hit("b", "x", similarity=0.62), hit("c", "x", similarity=0.1)]
    assert [h.chunk_id for h in relevant(hits)] == ["a", "b"]


def test_passages_are_numbered_in_order_within_the_budget_and_never_cut() -> None:
    hits = [hit("a", "one two three"), hit("b", "w " * 50), hit("c", "four five"), hit("a", "one two three")]
    sources = numbered_sources(hits, max_tokens=15, count_tokens=words)
    assert [(s.marker, s.chunk_id) for s in sources] == [(1, "a"), (2, "c")]  # b does not fit; a twice is once
    assert sources[1].text == "four five"


def test_the_grounding_message_shows_each_passage_with_its_marker_and_place() -> None:
    sources = numbered_sources([hit("a", "High tide comes twice a day.", location="page 2")], max_tokens=100, count_tokens=words)
    message = grounding_message(sources)
    assert message.startswith(GROUNDED_INSTRUCTIONS)
    assert "[1] Tides, page 2\nHigh tide comes twice a day." in message
    assert grounding_message(()) == NOTHING_FOUND_INSTRUCTIONS


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
