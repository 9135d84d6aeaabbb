"""A deterministic, nearly free engine that echoes the prompt: for tests and benchmarks.

Given retrieved passages it answers like an obedient model: the first passage's first sentence,
cited with its marker; told that nothing relevant was found, it says so. Asked a question that a
fact of the rolling summary answers, it answers with that fact.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator

from inference.instructions import GROUNDED_INSTRUCTIONS, NOTHING_FOUND_INSTRUCTIONS, SUMMARY_HEADER
from inference.engine import (
    ChatMessage,
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    TokenText,
)

_WORDS_WHEN_NO_USER_TEXT = ("nothing", "to", "echo")
_PASSAGE = re.compile(r"^\[(\d+)\] ([^\n]*)\n(.+?)(?:\n\n|\Z)", re.MULTILINE | re.DOTALL)


def prompt_word_count(messages: tuple[ChatMessage, ...]) -> int:
    return sum(len(message.content.split()) for message in messages)


def grounded_answer(messages: tuple[ChatMessage, ...]) -> str | None:
    """What a model that follows the grounding instructions would say: cite passage [1], or admit there is none."""
    for message in messages:
        if message.role != "system":
            continue
        if message.content.startswith(NOTHING_FOUND_INSTRUCTIONS):
            return "The documents do not cover this question, so I cannot answer it from them."
        if message.content.startswith(GROUNDED_INSTRUCTIONS):
            passage = _PASSAGE.search(message.content)
            if passage is not None:
                first_sentence = re.split(r"(?<=[.!?])\s+", passage.group(3).strip(), maxsplit=1)[0]
                return f"According to {passage.group(2).strip()}: {first_sentence} [{passage.group(1)}]"
    return None


def remembered_answer(messages: tuple[ChatMessage, ...]) -> str | None:
    """A question answered from the rolling summary, as a model that reads its context would."""
    question = next((message.content for message in reversed(messages) if message.role == "user"), "")
    if not question.rstrip().endswith("?"):
        return None
    wanted = {word.lower() for word in re.findall(r"\w{3,}", question)}
    facts = [
        line.split(") ", 1)[-1]
        for message in messages
        if message.role == "system" and message.content.startswith(SUMMARY_HEADER)
        for line in message.content.splitlines()[1:]
    ]
    scored = [(len(wanted & {word.lower() for word in re.findall(r"\w{3,}", fact)}), fact) for fact in facts]
    best = max(scored, default=(0, ""))
    return f"From earlier in our conversation: {best[1]}" if best[0] >= 2 else None


def scripted_answer(messages: tuple[ChatMessage, ...], *, answer_tokens: int) -> tuple[str, ...]:
    """The full answer for a prompt, one token per element, each with its leading space."""
    if answer_tokens < 1:
        return ()
    grounded = grounded_answer(messages) or remembered_answer(messages)
    if grounded is not None:
        return tuple(f" {word}" for word in grounded.split()[:answer_tokens])
    # A digest of the whole conversation leads the answer, so two prompts that share their last
    # user message but differ earlier still get different answers.
    conversation_text = "\x1e".join(f"{message.role}\x1f{message.content}" for message in messages)
    digest = hashlib.blake2b(conversation_text.encode(), digest_size=4).hexdigest()
    last_user_words = next(
        (message.content.split() for message in reversed(messages) if message.role == "user"), []
    ) or list(_WORDS_WHEN_NO_USER_TEXT)
    tokens = [f" [{digest}]"]
    tokens.extend(f" {last_user_words[i % len(last_user_words)]}" for i in range(answer_tokens - 1))
    return tuple(tokens)


class ScriptedEngine:
    """Echoes the last user message's words, one per token, with an optional delay per token."""

    name = "scripted"

    def __init__(
        self, *, token_delay_s: float = 0.0, answer_tokens: int = 20, max_concurrency: int = 1024
    ) -> None:
        self.token_delay_s = token_delay_s
        self.answer_tokens = answer_tokens
        self.max_concurrency = max_concurrency
        self._running_request_ids: set[str] = set()
        self._aborted_request_ids: set[str] = set()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._aborted_request_ids.clear()

    def abort(self, request_id: str) -> bool:
        if request_id not in self._running_request_ids:
            return False
        self._aborted_request_ids.add(request_id)
        return True

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        answer = scripted_answer(
            request.messages, answer_tokens=min(self.answer_tokens, request.max_output_tokens)
        )
        prompt_tokens = prompt_word_count(request.messages)
        self._running_request_ids.add(request.request_id)
        try:
            output_tokens = 0
            for token in answer:
                # Even with no delay, yield control so a fast stream never starves the loop.
                await asyncio.sleep(self.token_delay_s)
                if request.request_id in self._aborted_request_ids:
                    yield GenerationFinished(
                        prompt_tokens=prompt_tokens,
                        output_tokens=output_tokens,
                        finish_reason="cancelled",
                    )
                    return
                output_tokens += 1
                yield TokenText(text=token)
            cut_short = request.max_output_tokens < self.answer_tokens
            yield GenerationFinished(
                prompt_tokens=prompt_tokens,
                output_tokens=output_tokens,
                finish_reason="length" if cut_short else "stop",
            )
        finally:
            self._running_request_ids.discard(request.request_id)
            self._aborted_request_ids.discard(request.request_id)
