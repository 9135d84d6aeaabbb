"""The relevance gate, pure: whether a search found anything about the question, and which passages are about it.

Vector search always returns its nearest chunks, however far, and BM25 finds a chunk for any shared
word; neither says "nothing here". The gate reads the cosine similarity of each hit to the question
(all-MiniLM-L6-v2; the index reports it for every hit, BM25-only ones included): when the best hit
is below `min_similarity`, the documents do not cover the question and no passage goes in;
otherwise the passages within `passage_margin` of that threshold go in. The threshold was chosen on
a development split of the benchmark's questions and confirmed on a held-out split
(`benchmarks/relevance_gate.py`, docs/retrieval-quality.md).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from projections.search.index import SearchHit

__all__ = ["DEFAULT_MIN_SIMILARITY", "DEFAULT_PASSAGE_MARGIN", "RelevanceGate"]

DEFAULT_MIN_SIMILARITY = 0.40  # chosen on the development split (docs/retrieval-quality.md)
DEFAULT_PASSAGE_MARGIN = 0.1


@dataclass(frozen=True, kw_only=True)
class RelevanceGate:
    """Best hit at or above `min_similarity`, or nothing; then the hits at or above `min_similarity - passage_margin`."""

    min_similarity: float = DEFAULT_MIN_SIMILARITY
    passage_margin: float = DEFAULT_PASSAGE_MARGIN

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity is a cosine similarity, between -1 and 1; got {self.min_similarity}")
        if self.passage_margin < 0:
            raise ValueError(f"passage_margin must not be negative, got {self.passage_margin}")

    def covers(self, hits: Sequence[SearchHit]) -> bool:
        """Whether the hits say the documents are about the question.

        Hits of an engine that reports no similarity (Elasticsearch's server-side RRF) cannot be
        judged: they pass, as before the gate.
        """
        judged = [hit.similarity for hit in hits if hit.similarity is not None]
        if not judged:
            return bool(hits)
        return max(judged) >= self.min_similarity

    def passages(self, hits: Sequence[SearchHit]) -> list[SearchHit]:
        """The hits that may go into a prompt, in their order: none unless `covers(hits)`."""
        if not self.covers(hits):
            return []
        floor = self.min_similarity - self.passage_margin
        return [hit for hit in hits if hit.similarity is None or hit.similarity >= floor]
