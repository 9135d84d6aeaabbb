"""Redaction: the spans a classifier found (PII) replaced by a tag naming their kind, `<EMAIL_ADDRESS>`."""

from __future__ import annotations

from collections.abc import Iterable

from processors.safety.classifiers import Span


def redact(text: str, spans: Iterable[Span]) -> str:
    """`text` with each span replaced by `<LABEL>`; overlapping spans become one tag, named by the highest-scoring."""
    merged: list[tuple[int, int, Span]] = []
    for span in sorted(spans, key=lambda span: (span.start, -span.end)):
        start, end = max(0, span.start), min(len(text), span.end)
        if start >= end:
            continue
        if merged and start < merged[-1][1]:
            previous_start, previous_end, previous = merged[-1]
            merged[-1] = (previous_start, max(previous_end, end), span if span.score > previous.score else previous)
        else:
            merged.append((start, end, span))
    pieces: list[str] = []
    position = 0
    for start, end, span in merged:
        pieces += [text[position:start], f"<{span.label}>"]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)
