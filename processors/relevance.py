"""The relevance gate, pure: whether a search found anything about the question, and which passages are about it.

Vector search always returns its nearest chunks, however far, and BM25 finds a chunk for any shared
word; neither says "nothing here". The gate reads two signals the search already has:

- the cosine similarity of the best hit to the question (all-MiniLM-L6-v2; the index reports it
  for every hit, BM25-only ones included);
- the share of the question's content words (`queries.content_words`: no stop or question words)
  that no passage the search saw contains as a whole word, in its title, location or text: the
  candidates, and where that decides it the keyword search's window (`unmatched_share`). A question
  about pandas, argparse or the Rust borrow checker names a word the documents never use; a
  question the documents answer seldom does, even when it is paraphrased.

The documents cover the question when the best similarity reaches `min_similarity +
unmatched_penalty * unmatched_share`: every unmatched word raises the bar. Then the passages within
`passage_margin` of that bar go in. Both constants were chosen together on the development halves
of the benchmark's two collections and checked on the held-out halves
(`benchmarks/retrieval_quality.py`, docs/retrieval-quality.md "The relevance gate").
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from projections.search.index import ChunkRecord, SearchHit
from projections.search.queries import content_words, passage_words

__all__ = [
    "DEFAULT_MIN_SIMILARITY",
    "DEFAULT_PASSAGE_MARGIN",
    "DEFAULT_UNMATCHED_PENALTY",
    "RelevanceGate",
    "unmatched_share",
]

# Chosen on the development halves (102 questions: 72 answerable, 30 not) by the rule "decline the
# most unanswerable questions with at most 5% of answerable ones declined", over a grid of
# thresholds 0.30-0.60 (step 0.0125) and penalties 0-0.6 (step 0.05); ties go to the fewest answerable
# declined, then the smallest penalty, then the lowest threshold (docs/retrieval-quality.md).
DEFAULT_MIN_SIMILARITY = 0.3375  # the bar, a cosine, for a question every content word of which the passages contain
DEFAULT_UNMATCHED_PENALTY = 0.4  # added to the bar, a cosine, per unit share of content words no passage contains
DEFAULT_PASSAGE_MARGIN = 0.1


def unmatched_share(question: str, passages: Iterable[ChunkRecord]) -> float:
    """The share of the question's content words that none of `passages` contains as a whole word (title, location, text).

    Words are compared lower-cased and unstemmed ("parse" does not match "parsing"). 0.0 for a
    question without words.
    """
    words = content_words(question)
    if not words:
        return 0.0
    seen: set[str] = set()
    for passage in passages:
        seen |= passage_words(passage.title, passage.location, passage.text)
    return sum(word not in seen for word in words) / len(words)


@dataclass(frozen=True, kw_only=True)
class RelevanceGate:
    """Best hit at or above the bar (`min_similarity`, raised by unmatched words), or nothing; then the hits near it."""

    min_similarity: float = DEFAULT_MIN_SIMILARITY
    unmatched_penalty: float = DEFAULT_UNMATCHED_PENALTY
    passage_margin: float = DEFAULT_PASSAGE_MARGIN

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity is a cosine similarity, between -1 and 1; got {self.min_similarity}")
        if self.unmatched_penalty < 0:
            raise ValueError(f"unmatched_penalty must not be negative, got {self.unmatched_penalty}")
        if self.passage_margin < 0:
            raise ValueError(f"passage_margin must not be negative, got {self.passage_margin}")

    def bar(self, unmatched: float) -> float:
        """The similarity the best hit must reach when `unmatched` (0-1) of the question's content words are in no passage."""
        return self.min_similarity + self.unmatched_penalty * unmatched

    def covers(self, hits: Sequence[SearchHit], *, unmatched: float = 0.0) -> bool:
        """Whether the hits say the documents are about the question.

        `unmatched`: `unmatched_share` of the question over the passages the search saw; the default,
        0.0, judges on the similarity alone (the lowest bar). Hits of an engine that reports no
        similarity (Elasticsearch's server-side RRF) cannot be judged: they pass, as before the gate.
        """
        best = _best_similarity(hits)
        if best is None:
            return bool(hits)
        return best >= self.bar(unmatched)

    def undecided(self, hits: Sequence[SearchHit], *, unmatched: float) -> bool:
        """Whether more passages could change the verdict on `hits` at `unmatched`: they would cover at no unmatched word, but not at this share.

        More passages can only lower the unmatched share, and so the bar: a search that covers
        already, or that would not cover with every word matched, is decided.
        """
        return self.covers(hits) and not self.covers(hits, unmatched=unmatched)

    def passages(self, hits: Sequence[SearchHit], *, unmatched: float = 0.0) -> list[SearchHit]:
        """The hits that may go into a prompt, in their order: none unless `covers(hits, unmatched=unmatched)`."""
        if not self.covers(hits, unmatched=unmatched):
            return []
        floor = self.bar(unmatched) - self.passage_margin
        return [hit for hit in hits if hit.similarity is None or hit.similarity >= floor]


def _best_similarity(hits: Sequence[SearchHit]) -> float | None:
    return max((hit.similarity for hit in hits if hit.similarity is not None), default=None)
