"""A deterministic, nearly free engine that echoes the prompt: for tests and benchmarks.

Given retrieved passages it answers like an obedient model: the first passage's first sentence,
cited with its marker; told that nothing relevant was found, it says so. Asked a question that a
fact of the rolling summary answers, it answers with that fact.

Tool calls have a trigger. When the request offers at least one tool, each
`call:<tool_name>(<arguments>)` in the latest user message becomes one proposed call, with call ids
`call_1`, `call_2`, ... numbered in the message's order, e.g. `call:weather({"city": "Oslo"})
call:clock({})`. The word `then` (any case) between two triggers splits them into groups proposed
one model step after another: `call:a({}) then call:b({}) call:c({}) then call:d({})` proposes `a`,
then `b` and `c` together, then `d`. A step proposes the next group whose calls have not been
proposed yet (counted by the assistant messages with tool calls after the latest user message) and
finishes with "tool_calls" and no text; the ids keep their place in the message, so they never
repeat across a run's steps. The arguments run to the first `)` followed by whitespace, punctuation
or the end, and are passed on as written: invalid JSON on purpose, or the name of a tool not on
offer, lets a test drive the caller's handling of either. Once every group has been proposed (or a
step offers no tools), it proposes nothing more and reports each result after the latest user
message instead (`weather returned {"sky": "clear"}.`, the name looked up by call id), so a tool
loop ends. Without tools on offer the trigger is ordinary text and gets echoed.
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
    ToolCallProposal,
    ToolSpec,
)

_WORDS_WHEN_NO_USER_TEXT = ("nothing", "to", "echo")
_PASSAGE = re.compile(r"^\[(\d+)\] ([^\n]*)\n(.+?)(?:\n\n|\Z)", re.MULTILINE | re.DOTALL)
# Lazy up to a `)` that ends a word, so `)` inside the arguments (or broken JSON) does not end them.
_CALL_TRIGGER = re.compile(r"call:([A-Za-z0-9_.-]+)\((.*?)\)(?=\s|[.,;:!?]|\Z)", re.DOTALL)
# Between two triggers: the later one waits for the earlier one's result, one model step later.
_THEN = re.compile(r"\bthen\b", re.IGNORECASE)


def prompt_word_count(messages: tuple[ChatMessage, ...]) -> int:
    # Content only, as tokenizers.WordTokenizer counts for the prompt builder.
    return sum(len(message.content.split()) for message in messages)


def _call_word_count(call: ToolCallProposal) -> int:
    return len(f"{call.name}({call.arguments})".split())


def _since_latest_user_message(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    latest = max((index for index, message in enumerate(messages) if message.role == "user"), default=-1)
    return messages[latest + 1 :]


def call_groups(question: str) -> tuple[tuple[ToolCallProposal, ...], ...]:
    """The calls of `question`'s triggers, numbered in order, in groups split by the word `then` between two triggers."""
    groups: list[list[ToolCallProposal]] = []
    previous_end = 0
    for number, match in enumerate(_CALL_TRIGGER.finditer(question), start=1):
        if not groups or _THEN.search(question[previous_end : match.start()]):
            groups.append([])
        groups[-1].append(ToolCallProposal(call_id=f"call_{number}", name=match[1], arguments=match[2]))
        previous_end = match.end()
    return tuple(tuple(group) for group in groups)


def proposed_calls(messages: tuple[ChatMessage, ...], tools: tuple[ToolSpec, ...]) -> tuple[ToolCallProposal, ...]:
    """The next group of calls the latest user message's triggers propose; none once every group has been proposed."""
    if not tools:
        return ()
    proposed_steps = sum(
        1 for message in _since_latest_user_message(messages) if message.role == "assistant" and message.tool_calls
    )
    question = next((message.content for message in reversed(messages) if message.role == "user"), "")
    groups = call_groups(question)
    # Every group proposed (its results are in): answer, so a tool loop ends.
    return groups[proposed_steps] if proposed_steps < len(groups) else ()


def tool_results_answer(messages: tuple[ChatMessage, ...]) -> str | None:
    """What a model says once its calls came back: each result, under the name of the tool that gave it."""
    since_question = _since_latest_user_message(messages)
    results = [message for message in since_question if message.role == "tool"]
    if not results:
        return None
    names = {call.call_id: call.name for message in since_question for call in message.tool_calls}
    return " ".join(
        f"{names.get(result.tool_call_id or '', result.tool_call_id or 'a tool')} returned {result.content}."
        for result in results
    )


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
    grounded = tool_results_answer(messages) or grounded_answer(messages) or remembered_answer(messages)
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
    """Echoes the last user message's words, one per token, with an optional delay per token; proposes
    the calls its trigger asks for when tools are on offer."""

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
        limit = min(self.answer_tokens, request.max_output_tokens)
        answer = scripted_answer(request.messages, answer_tokens=limit)
        calls = proposed_calls(request.messages, request.tools)
        prompt_tokens = prompt_word_count(request.messages)
        self._running_request_ids.add(request.request_id)
        try:
            if calls:
                yield await self._proposal(request, calls, prompt_tokens=prompt_tokens)
                return
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
            # Cut short when the engine's whole answer is longer than the room it was given.
            whole_answer = scripted_answer(request.messages, answer_tokens=self.answer_tokens)
            yield GenerationFinished(
                prompt_tokens=prompt_tokens,
                output_tokens=output_tokens,
                finish_reason="length" if len(whole_answer) > len(answer) else "stop",
            )
        finally:
            self._running_request_ids.discard(request.request_id)
            self._aborted_request_ids.discard(request.request_id)

    async def _proposal(
        self, request: GenerationRequest, calls: tuple[ToolCallProposal, ...], *, prompt_tokens: int
    ) -> GenerationFinished:
        await asyncio.sleep(self.token_delay_s)  # one decode step's pause, where an abort can land
        if request.request_id in self._aborted_request_ids:
            return GenerationFinished(prompt_tokens=prompt_tokens, output_tokens=0, finish_reason="cancelled")
        call_tokens = sum(_call_word_count(call) for call in calls)
        if call_tokens > request.max_output_tokens:
            # Out of room in the middle of its calls: a step cut short proposes nothing.
            return GenerationFinished(
                prompt_tokens=prompt_tokens, output_tokens=request.max_output_tokens, finish_reason="length"
            )
        return GenerationFinished(
            prompt_tokens=prompt_tokens, output_tokens=call_tokens, finish_reason="tool_calls", tool_calls=calls
        )
