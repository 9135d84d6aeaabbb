"""The reranking port and its adapter on a cross-encoder: the fused candidates reordered by a model that reads the
question and each passage together.

A bi-encoder (the index's vectors) embeds question and passage apart, so it cannot weigh which of
the question's words the passage answers; a cross-encoder reads both in one pass and scores the
pair. It costs a forward pass per candidate, so only the fused list's head is reranked
(`DocumentRetriever`, `--rerank-depth`). No such model ships inside a package this project can
install, so the stage is off unless an operator names a model directory (`--rerank-model`): a
sentence-transformers cross-encoder with one output, e.g. cross-encoder/ms-marco-MiniLM-L-6-v2 or
ms-marco-TinyBERT-L-2-v2 saved to disk. Its cost on two cores: docs/retrieval-quality.md.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from kernel.lazy_imports import lazy_attribute
from projections.search.embedding import go_offline, headed_text
from projections.search.index import SearchHit
from projections.search.ordering import comparable_score

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

__all__ = ["CrossEncoderReranker", "DEFAULT_RERANK_DEPTH", "Reranker", "reranked", "reranking_text"]

# How many of the fused list's best hits a reranker reorders: each costs the model a forward pass, and the time
# grows with the model's depth (docs/retrieval-quality.md "A reranking stage").
DEFAULT_RERANK_DEPTH = 16


class Reranker(Protocol):
    """Scores how well each passage answers a question, reading both together."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """One float per passage, in their order: higher is more relevant; comparable within one call only."""
        ...


def reranking_text(hit: SearchHit) -> str:
    """What the reranker reads for a hit: its document's title and location (its heading, or page) above its text."""
    return headed_text(hit.title, hit.location, hit.text)


def reranked(hits: Sequence[SearchHit], scores: Sequence[float]) -> list[SearchHit]:
    """`hits` (the fused ranking's head, best first) ordered by the reranker's `scores`, each carried on its hit.

    Equal scores keep the fused order, itself deterministic (`ordering.py`), so the result is too.
    """
    if len(hits) != len(scores):
        raise ValueError(f"{len(scores)} reranker scores for {len(hits)} hits")
    order = sorted(range(len(hits)), key=lambda position: (-comparable_score(scores[position]), position))
    return [replace(hits[position], rerank_score=float(scores[position])) for position in order]


class CrossEncoderReranker:
    """The `Reranker` port on a sentence-transformers cross-encoder read from a local directory, on the CPU (no network).

    Loading takes a second or more: build one per process and share it. Scoring runs in a worker
    thread so the event loop keeps serving; calls take turns (the tokenizer's settings are shared).
    """

    def __init__(self, model_path: Path, *, max_tokens: int = 512, batch_size: int = 16) -> None:
        self._model_path = model_path
        self._max_tokens = max_tokens
        self._batch_size = batch_size
        self._model: CrossEncoder | None = None
        self._scoring = threading.Lock()

    async def start(self) -> None:
        if self._model is None:
            self._model = await asyncio.to_thread(self._load)

    def _load(self) -> CrossEncoder:
        go_offline()
        if not (self._model_path / "config.json").is_file():
            raise ValueError(f"the reranking model directory {self._model_path} holds no config.json: not a model saved to disk")
        cross_encoder = lazy_attribute("sentence_transformers", "CrossEncoder")
        model = cross_encoder(str(self._model_path), device="cpu", max_length=self._max_tokens, local_files_only=True)
        if model.num_labels != 1:
            raise ValueError(
                f"the reranking model in {self._model_path} has {model.num_labels} outputs; a reranker scores a pair with one"
            )
        return model

    async def close(self) -> None:
        self._model = None

    async def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("the reranker is not started")
        if not passages:
            return np.empty(0, dtype=np.float32)
        return await asyncio.to_thread(self._predict, self._model, query, list(passages))

    def _predict(self, model: CrossEncoder, query: str, passages: list[str]) -> np.ndarray:
        with self._scoring:
            scores = model.predict(
                [(query, passage) for passage in passages],
                batch_size=self._batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(scores, dtype=np.float32).reshape(len(passages))
