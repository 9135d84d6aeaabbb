"""Models loaded on first use: a process that never embeds a text never pays for loading the embedding model.

MiniLM takes about 7 s and a few hundred MB to load, and torch more to import. Every process that
runs the ingester (and, with retrieval, the prompt builder) holds one, but many never use it: a
server whose users upload nothing, each test server. These wrappers load on the first call that
needs the model, once, whoever calls first; `load()` loads ahead of time where the first call must be fast.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from processors.ingestion.chunking import Tokenizer
from projections.search.embedding import DEFAULT_EMBED_BATCH_SIZE, MINILM_DIMENSIONS, MiniLMEmbedder

__all__ = ["OnDemandEmbedder", "OnDemandTokenizer"]


class OnDemandEmbedder:
    """The `Embedder` port on all-MiniLM-L6-v2, loaded by the first `embed` (or `load`), not by `start`."""

    dimensions: int = MINILM_DIMENSIONS

    def __init__(self, *, batch_size: int = DEFAULT_EMBED_BATCH_SIZE) -> None:
        self._model = MiniLMEmbedder(batch_size=batch_size)
        self._loading = asyncio.Lock()
        self._loaded = False
        self._tokenizer: Any = None

    @property
    def loaded(self) -> bool:
        return self._loaded

    async def start(self) -> None:
        """Nothing to do yet: the model loads when it is first needed."""

    async def load(self) -> None:
        async with self._loading:
            if not self._loaded:
                await self._model.start()
                self._loaded = True

    async def close(self) -> None:
        await self._model.close()
        self._loaded = False

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not self._loaded:
            await self.load()
        return await self._model.embed(texts)

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer; before the model loads, the same tokenizer loaded alone (fast)."""
        if self._loaded:
            return self._model.tokenizer
        if self._tokenizer is None:
            from projections.search.embedding import load_minilm_tokenizer

            self._tokenizer = load_minilm_tokenizer()
        return self._tokenizer


class OnDemandTokenizer:
    """A chunking `Tokenizer` loaded by its first use (on whichever thread that is)."""

    def __init__(self, load: Callable[[], Tokenizer]) -> None:
        self._load = load
        self._tokenizer: Tokenizer | None = None
        self._lock = threading.Lock()

    def token_spans(self, text: str) -> Sequence[tuple[int, int]]:
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = self._load()
        return self._tokenizer.token_spans(text)
