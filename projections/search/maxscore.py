"""Exact top-k BM25 without scoring every match (MaxScore, Turtle and Flood 1995), in the terms of FTS5's bm25().

FTS5 scores every chunk that holds any word of the query. But a word adds at most idf x (k1 + 1) to a
chunk's score, whatever its frequency, the chunk's length or the column weights. So once the k-th best
score among the chunks holding one of the rarest words is known, a chunk holding only the other (common)
words cannot reach it if those words' bounds sum to less: the search need only score the chunks that hold
a rare word, the common words still counting wherever they occur.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["BM25_K1", "first_pass_words", "idf_ceiling", "word_bound", "words_needed"]

# FTS5's bm25() constants (fts5_aux.c): k1 = 1.2, b = 0.75; an idf at or below 0 counts as 1e-6.
BM25_K1 = 1.2
_IDF_FLOOR = 1e-6

# A bound is compared with a score FTS5 summed in another order: leave room for rounding.
_RELATIVE_SLACK = 1e-9


def idf_ceiling(*, rows: int, docs_at_least: int) -> float:
    """The most FTS5 can give a word as idf, knowing the table's rows and at least how many hold the word.

    FTS5's idf is log((N - n + 0.5) / (n + 0.5)): it falls as n grows, so a count known only from below
    gives an idf at least as high as the one FTS5 uses, and the bound stays safe.
    """
    idf = math.log((rows - docs_at_least + 0.5) / (docs_at_least + 0.5)) if rows > docs_at_least else 0.0
    return max(idf, _IDF_FLOOR)


def word_bound(idf: float) -> float:
    """The most one word adds to a chunk's BM25 score: its frequency term tf(k1+1)/(tf+K) stays below k1 + 1."""
    return idf * (BM25_K1 + 1.0)


def first_pass_words(docs_rarest_first: Sequence[int], *, budget: int) -> int:
    """How many of the rarest words a first pass matches: at least one, then more while their chunks fit `budget`."""
    count, docs = 1, docs_rarest_first[0] if docs_rarest_first else 0
    while count < len(docs_rarest_first) and docs + docs_rarest_first[count] <= budget:
        docs += docs_rarest_first[count]
        count += 1
    return count


def words_needed(bounds_rarest_first: Sequence[float], threshold: float | None) -> int:
    """How many of the rarest words a chunk must hold for a chance to score `threshold` or better.

    `threshold` is the k-th best score a pass found (as a positive number), None if it found fewer than k
    chunks. The most common words are left out for as long as their bounds together stay below it.
    """
    needed = len(bounds_rarest_first)
    if threshold is None:
        return needed
    ceiling = threshold - _RELATIVE_SLACK * max(1.0, threshold)
    common_words_total = 0.0
    while needed > 0 and common_words_total + bounds_rarest_first[needed - 1] < ceiling:
        common_words_total += bounds_rarest_first[needed - 1]
        needed -= 1
    return needed
