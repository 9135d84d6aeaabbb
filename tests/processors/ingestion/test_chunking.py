"""Chunking: structure first, token budgets on the real tokenizer's counts, overlap inside a section only."""

import re
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.ingestion.chunking import (
    DEFAULT_MAX_TOKENS,
    EMBEDDING_MODEL_MAX_TOKENS,
    ChunkDraft,
    Tokenizer,
    chunk_document,
)
from processors.ingestion.extraction.dispatch import extract
from processors.ingestion.extraction.document import ExtractedDocument, MediaType, Section


class WordTokenizer:
    """One token per run of non-blank characters: counts anyone can check by eye."""

    def token_spans(self, text: str) -> Sequence[tuple[int, int]]:
        return [match.span() for match in re.finditer(r"\S+", text)]


class CharacterTokenizer:
    """One token per non-blank character: every word is many tokens, so cuts must fall inside words."""

    def token_spans(self, text: str) -> Sequence[tuple[int, int]]:
        return [(index, index + 1) for index, character in enumerate(text) if not character.isspace()]


def document_of(*sections: Section) -> ExtractedDocument:
    return ExtractedDocument(title="t", sections=sections)


def chunks_of(text: str, tokenizer: Tokenizer, **budget: int) -> tuple[ChunkDraft, ...]:
    return chunk_document(document_of(Section(text=text, page=4, heading="Costs")), tokenizer=tokenizer, **budget)


def words(count: int, stem: str = "w") -> str:
    return " ".join(f"{stem}{index}" for index in range(count))


def sentences(count: int, length: int) -> str:
    return " ".join(f"{words(length, stem=f's{index}w')}." for index in range(count))


def assert_sound(section_text: str, chunks: Sequence[ChunkDraft], tokenizer: Tokenizer, max_tokens: int) -> None:
    """Budgets hold on the tokenizer's own counts; texts are slices of the section; together they cover it."""
    for chunk in chunks:
        assert chunk.text == section_text[chunk.start : chunk.end]
        assert chunk.text == chunk.text.strip() and chunk.text
        assert chunk.token_count == len(tokenizer.token_spans(chunk.text)) <= max_tokens
    for previous, following in zip(chunks, chunks[1:]):
        assert previous.start < following.start and previous.end < following.end
        assert section_text[previous.end : following.start].strip() == ""  # no gap holding text
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(index in covered for index, character in enumerate(section_text) if not character.isspace())


# -- structure -----------------------------------------------------------------------------------


def test_a_section_that_fits_is_one_chunk_carrying_its_page_and_heading() -> None:
    text = "  Rent went up.\n\nHeating went down.  "
    [chunk] = chunks_of(text, WordTokenizer())
    assert chunk == ChunkDraft(
        ordinal=0,
        text="Rent went up.\n\nHeating went down.",
        page=4,
        heading="Costs",
        token_count=6,
        section=0,
        start=2,
        end=len(text) - 2,
    )


def test_an_empty_or_blank_section_has_no_chunks() -> None:
    assert chunks_of("", WordTokenizer()) == ()
    assert chunks_of(" \n\n\t ", WordTokenizer()) == ()


def test_chunks_never_cross_sections_and_ordinals_run_across_the_document() -> None:
    document = document_of(
        Section(text=words(25, "a"), page=1, heading="Intro"),
        Section(text=words(5, "b"), page=1, heading="Scope"),
        Section(text=words(25, "c"), page=2, heading="Scope"),
    )
    chunks = chunk_document(document, tokenizer=WordTokenizer(), max_tokens=10, overlap_tokens=3)
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        section = document.sections[chunk.section]
        assert (chunk.page, chunk.heading) == (section.page, section.heading)
        assert {word[0] for word in chunk.text.split()} == {"abc"[chunk.section]}
    first_of_each = {chunk.section: chunk for chunk in reversed(chunks)}
    assert all(chunk.start == 0 for chunk in first_of_each.values())  # no overlap carried into a new section
    assert [chunk.section for chunk in chunks] == sorted(chunk.section for chunk in chunks)


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    paragraphs = [words(30, "p"), words(30, "q"), words(30, "r")]
    chunks = chunks_of("\n\n".join(paragraphs), WordTokenizer(), max_tokens=70, overlap_tokens=0)
    assert [chunk.text for chunk in chunks] == [f"{paragraphs[0]}\n\n{paragraphs[1]}", paragraphs[2]]


def test_a_long_paragraph_is_cut_at_sentence_ends() -> None:
    chunks = chunks_of(sentences(10, 9), WordTokenizer(), max_tokens=30, overlap_tokens=0)
    assert [chunk.token_count for chunk in chunks] == [27, 27, 27, 9]
    assert all(chunk.text.endswith(".") for chunk in chunks)


def test_cjk_sentences_end_without_a_space(wordpiece) -> None:
    sentence = "\u6211\u4eec\u7684\u4ea7\u54c1\u5728\u4e9a\u6d32\u5e02\u573a\u9500\u552e\u826f\u597d\u3002"  # 14 + 1 tokens
    chunks = chunks_of(sentence * 6, wordpiece, max_tokens=40, overlap_tokens=0)
    assert [chunk.text for chunk in chunks] == [sentence * 2] * 3


def test_a_long_sentence_is_cut_between_words() -> None:
    text = words(100)
    chunks = chunks_of(text, WordTokenizer(), max_tokens=30, overlap_tokens=0)
    assert [chunk.token_count for chunk in chunks] == [30, 30, 30, 10]
    assert " ".join(chunk.text for chunk in chunks) == text


def test_a_long_word_is_cut_between_tokens() -> None:
    chunks = chunks_of("abcdefghij" * 3, CharacterTokenizer(), max_tokens=12, overlap_tokens=0)
    assert [chunk.text for chunk in chunks] == ["abcdefghijab", "cdefghijabcd", "efghij"]


def test_the_text_is_the_original_slice_not_detokenised_pieces(wordpiece) -> None:
    text = "Caf\u00e9 R\u00e9SUM\u00c9:  naïve   co\u00f6perate — “quoted”,\tTAB\u2026 \U0001f600 done."
    [chunk] = chunks_of(text, wordpiece)
    assert chunk.text == text


# -- overlap -------------------------------------------------------------------------------------


def test_each_chunk_starts_with_the_tail_of_the_previous_one() -> None:
    text = words(100)
    chunks = chunks_of(text, WordTokenizer(), max_tokens=30, overlap_tokens=8)
    assert len(chunks) > 1
    for previous, following in zip(chunks, chunks[1:]):
        overlap = text[following.start : previous.end]
        assert previous.text.endswith(overlap) and following.text.startswith(overlap)
        assert len(overlap.split()) == 8  # every cut is between words here, so the overlap is full
        assert following.token_count <= 30


def test_overlap_starts_at_a_word_never_inside_one(wordpiece) -> None:
    text = " ".join(["internationalization unbelievably transcontinental"] * 60)
    chunks = chunks_of(text, wordpiece, max_tokens=40, overlap_tokens=10)
    for previous, following in zip(chunks, chunks[1:]):
        assert following.start < previous.end
        assert text[following.start - 1] == " "
        assert 0 < len(wordpiece.token_spans(text[following.start : previous.end])) <= 10


def test_without_overlap_chunks_do_not_share_text() -> None:
    chunks = chunks_of(words(100), WordTokenizer(), max_tokens=30, overlap_tokens=0)
    assert all(previous.end < following.start for previous, following in zip(chunks, chunks[1:]))


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(0, 0), (10, 10), (10, 11), (10, -1)])
def test_budgets_must_leave_room_for_new_text(max_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ValueError):
        chunks_of("text", WordTokenizer(), max_tokens=max_tokens, overlap_tokens=overlap_tokens)


# -- the real tokenizer --------------------------------------------------------------------------


def test_defaults_fit_the_embedding_model_with_its_special_tokens() -> None:
    assert DEFAULT_MAX_TOKENS + 2 <= EMBEDDING_MODEL_MAX_TOKENS  # [CLS] ... [SEP]


def test_real_documents_keep_every_budget_on_wordpiece_counts(wordpiece, report_pdf: bytes, report_docx: bytes) -> None:
    for data, media_type in ((report_pdf, MediaType.PDF), (report_docx, MediaType.DOCX)):
        document = extract(data, media_type)
        chunks = chunk_document(document, tokenizer=wordpiece, max_tokens=16, overlap_tokens=4)
        for index, section in enumerate(document.sections):
            of_section = [chunk for chunk in chunks if chunk.section == index]
            assert of_section and all((chunk.page, chunk.heading) == (section.page, section.heading) for chunk in of_section)
            assert_sound(section.text, of_section, wordpiece, 16)


def test_a_tiny_section_is_one_tiny_chunk(wordpiece) -> None:
    [chunk] = chunks_of("Hi.", wordpiece)
    assert (chunk.text, chunk.token_count) == ("Hi.", 2)


def test_a_huge_section_is_cut_within_the_default_budget(wordpiece) -> None:
    paragraph = (
        "The quarterly figures were reconciled against the ledger, and every discrepancy was traced to its source. "
        "Auditors sampled invoices from each region; none were missing. "
    )
    text = "\n\n".join(f"{index}. {paragraph * (1 + index % 4)}" for index in range(400))
    chunks = chunks_of(text, wordpiece)
    assert len(chunks) > 100
    assert_sound(text, chunks, wordpiece, DEFAULT_MAX_TOKENS)
    assert all(chunk.token_count + 2 <= EMBEDDING_MODEL_MAX_TOKENS for chunk in chunks)
    assert sum(chunk.token_count for chunk in chunks) / len(chunks) > DEFAULT_MAX_TOKENS / 2  # packed, not crumbs


def test_text_without_spaces_is_cut_between_wordpieces(wordpiece) -> None:
    chinese = "\u6211\u4eec\u7684\u4ea7\u54c1\u5728\u4e9a\u6d32\u5e02\u573a\u9500\u552e\u826f\u597d" * 30
    glued = "pneumonoultramicroscopicsilicovolcanoconiosis" * 2  # under 100 characters: wordpieces, not [UNK]
    for text in (chinese, glued):
        chunks = chunks_of(text, wordpiece, max_tokens=7, overlap_tokens=2)
        assert len(chunks) > 2
        assert_sound(text, chunks, wordpiece, 7)
        assert "".join(chunk.text for chunk in chunks) == text  # no spaces, no overlap starts: a clean partition


def test_chunking_is_deterministic(wordpiece, report_pdf: bytes) -> None:
    document = extract(report_pdf, MediaType.PDF)
    first = chunk_document(document, tokenizer=wordpiece, max_tokens=12, overlap_tokens=3)
    assert len(first) > 3
    assert chunk_document(document, tokenizer=wordpiece, max_tokens=12, overlap_tokens=3) == first


FRAGMENTS = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789", min_size=1, max_size=30),
    st.sampled_from([" ", " ", " ", "\n", "\n\n", "  \n \n", "\t", ". ", ", ", "! ", "? ", "...", "\u2026 ", "-", "'", "\u201c"]),
    st.sampled_from(["caf\u00e9", "\u4e2d\u6587", "\U0001f600", "\u00e9\u0301", "\u200b", "na\u00efve", "\u00a0", "\x07"]),
    st.text(min_size=1, max_size=3),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fragments=st.lists(FRAGMENTS, max_size=120), max_tokens=st.integers(1, 48), overlap=st.data())
def test_every_budget_holds_and_the_chunks_cover_the_section(wordpiece, fragments, max_tokens, overlap) -> None:
    overlap_tokens = overlap.draw(st.integers(0, max_tokens - 1), label="overlap_tokens")
    text = "".join(fragments)
    chunks = chunks_of(text, wordpiece, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
    assert_sound(text, chunks, wordpiece, max_tokens)
    assert chunks_of(text, wordpiece, max_tokens=max_tokens, overlap_tokens=overlap_tokens) == chunks
