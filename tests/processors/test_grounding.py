"""Grounding, pure: relevance cut, and numbered passages within a budget."""

from inference.instructions import GROUNDED_INSTRUCTIONS, NOTHING_FOUND_INSTRUCTIONS
from processors.grounding import grounding_message, numbered_sources, relevant
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
