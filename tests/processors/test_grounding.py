"""Grounding, pure: passages chosen (duplicates collapsed, distinct documents first) within a budget and a cap."""

from inference.instructions import GROUNDED_INSTRUCTIONS, NOTHING_FOUND_INSTRUCTIONS
from processors.grounding import choose_passages, grounding_message, numbered_sources
from projections.search.index import SearchHit


def hit(
    chunk_id: str, text: str, *, bm25: int | None = None, similarity: float | None = None, location: str = "",
    file_id: str | None = None, title: str = "Tides", score: float = 0.1,
) -> SearchHit:
    return SearchHit(
        chunk_id=chunk_id, file_id=file_id or f"file_{chunk_id[0]}", org_id="o", workspace_id="w", owner_id="u",
        acl="workspace", title=title, location=location, ordinal=0, text=text, score=score, bm25_rank=bm25,
        vector_rank=1 if similarity is not None else None, similarity=similarity,
    )


def words(text: str) -> int:
    return len(text.split())


def test_passages_are_numbered_in_order_within_the_budget_and_never_cut() -> None:
    hits = [hit("a", "one two three"), hit("b", "w " * 50), hit("c", "four five"), hit("a", "one two three")]
    sources = numbered_sources(hits, max_tokens=15, count_tokens=words)
    assert [(s.marker, s.chunk_id) for s in sources] == [(1, "a"), (2, "c")]  # b does not fit; a twice is once
    assert sources[1].text == "four five"


def test_the_cap_limits_the_passages_however_short() -> None:
    hits = [hit(f"{letter}1", f"passage about {letter} alone", score=1 - n / 10) for n, letter in enumerate("abcdef")]
    assert len(numbered_sources(hits, max_tokens=1_000, count_tokens=words, max_sources=3)) == 3


def test_the_same_text_on_several_pages_goes_in_once_with_the_others_noted() -> None:
    repeated = "Press the reset button for five seconds to restore the factory settings of the router."
    hits = [
        hit("a1", repeated, title="Setup guide", location="page 4", score=0.03),
        hit("b1", repeated + " ", title="Troubleshooting", location="page 9", score=0.029),
        hit("c1", "The status light blinks green while the firmware updates.", title="Lights", score=0.028),
    ]
    chosen = choose_passages(hits, max_tokens=1_000, count_tokens=words)
    assert [source.chunk_id for source in chosen.sources] == ["a1", "c1"]
    assert chosen.also_in == {"a1": ("Troubleshooting, page 9",)}
    message = grounding_message(chosen.sources, also_in=chosen.also_in)
    assert "[1] Setup guide, page 4 (the same text is also in: Troubleshooting, page 9)\n" in message


def test_distinct_documents_come_before_more_of_the_same_document() -> None:
    # Three passages of one manual page rank first; another page's passage ranks fourth.
    hits = [
        hit("m1", "Configure the proxy host in the network settings panel.", file_id="manual", score=0.0300),
        hit("m2", "The proxy port defaults to 8080 unless the administrator changes it.", file_id="manual", score=0.0295),
        hit("m3", "Proxy credentials are stored in the system keychain.", file_id="manual", score=0.0290),
        hit("f1", "Firewalls may block the proxy; ask the administrator to open the port.", file_id="faq", score=0.0280),
    ]
    chosen = [source.file_id for source in numbered_sources(hits, max_tokens=1_000, count_tokens=words, max_sources=2)]
    assert chosen == ["manual", "faq"]


def test_the_grounding_message_shows_each_passage_with_its_marker_and_place() -> None:
    sources = numbered_sources([hit("a", "High tide comes twice a day.", location="page 2")], max_tokens=100, count_tokens=words)
    message = grounding_message(sources)
    assert message.startswith(GROUNDED_INSTRUCTIONS)
    assert "[1] Tides, page 2\nHigh tide comes twice a day." in message
    assert grounding_message(()) == NOTHING_FOUND_INSTRUCTIONS
