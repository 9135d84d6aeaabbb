"""An LLM judge in the Llama Guard style, over an OpenAI-compatible `/v1/chat/completions` endpoint (a pool).

The model answers `safe`, or `unsafe` and a line of hazard codes (`unsafe\\nS1,S10`); each code maps to
one or more of the policy's categories (`LLAMA_GUARD_CATEGORIES`) at score 1.0. Codes with no policy
category (S6 specialized advice, S8 intellectual property, S13 elections) stay in `labels` for the
record and score nothing. An answer that is neither is a failure (the runner reports it, the policy's
fail-open or fail-closed choice decides), never a silent "safe".

Two ways to ask: `prompt="template"` (the default) sends the text as the conversation's message, as a
Llama Guard model served by vLLM or SGLang expects: its chat template writes the task, the categories
and the conversation around it. `prompt="instructions"` writes that task prompt here (`llama_guard_prompt`)
and sends it as one user message, for a general instruction model used as the judge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import httpx

from processors.safety.classifiers import Classification

# Llama Guard 3's hazard taxonomy (MLCommons' thirteen hazards, plus code interpreter abuse).
LLAMA_GUARD_HAZARDS: Mapping[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}
# Each hazard as the policy's categories (OpenAI's moderation names, `pii`); () where none fits.
LLAMA_GUARD_CATEGORIES: Mapping[str, tuple[str, ...]] = {
    "S1": ("illicit/violent", "violence"),
    "S2": ("illicit",),
    "S3": ("illicit/violent", "sexual"),
    "S4": ("sexual/minors",),
    "S5": ("harassment",),
    "S6": (),
    "S7": ("pii",),
    "S8": (),
    "S9": ("illicit/violent",),
    "S10": ("hate",),
    "S11": ("self-harm",),
    "S12": ("sexual",),
    "S13": (),
    "S14": ("illicit",),
}

PromptStyle = Literal["template", "instructions"]
Role = Literal["user", "assistant"]
_CODE = re.compile(r"S\d{1,2}")


class JudgeAnswerUnreadable(ValueError):
    """The judge answered something that is neither `safe` nor `unsafe` with hazard codes."""


class LlmJudgeClassifier:
    """Asks a Llama Guard style model about a text; `role` says whose words they are (the user's, or the answer's)."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        base_url: str,
        model: str,
        api_key: str | None = None,
        role: Role = "user",
        prompt: PromptStyle = "template",
        categories: Mapping[str, tuple[str, ...]] = LLAMA_GUARD_CATEGORIES,
        max_tokens: int = 16,
        name: str = "llm_judge",
    ) -> None:
        self.name = name
        self._client = client
        self._url = base_url.rstrip("/") + ("/chat/completions" if base_url.rstrip("/").endswith("/v1") else "/v1/chat/completions")
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._role = role
        self._prompt = prompt
        self._categories = categories
        self._max_tokens = max_tokens

    async def classify(self, text: str) -> Classification:
        # Timeouts are the runner's (one per classifier, from the policy); httpx's own stay as the client has them.
        response = await self._client.post(self._url, json=self.request_body(text), headers=self._headers)
        response.raise_for_status()
        try:
            answer = response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise JudgeAnswerUnreadable(f"not a chat completion: {response.text[:200]!r}") from error
        codes = parse_verdict(answer)
        return classification_of(codes, classifier=self.name, categories=self._categories)

    def request_body(self, text: str) -> dict:
        if self._prompt == "instructions":
            messages = [{"role": "user", "content": llama_guard_prompt(text, role=self._role)}]
        elif self._role == "assistant":
            # Llama Guard judges the last turn: an answer is judged as the reply to an (empty) request.
            messages = [{"role": "user", "content": ""}, {"role": "assistant", "content": text}]
        else:
            messages = [{"role": "user", "content": text}]
        return {"model": self._model, "messages": messages, "max_tokens": self._max_tokens, "temperature": 0, "stream": False}


def parse_verdict(answer: str) -> tuple[str, ...]:
    """The hazard codes of a Llama Guard answer: () for `safe`; `unsafe` with none is ("unsafe",)."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines:
        raise JudgeAnswerUnreadable("an empty answer")
    verdict = lines[0].lower()
    if verdict == "safe":
        return ()
    if verdict != "unsafe":
        raise JudgeAnswerUnreadable(f"neither safe nor unsafe: {lines[0][:80]!r}")
    codes = tuple(dict.fromkeys(_CODE.findall(" ".join(lines[1:]).upper())))
    return codes or ("unsafe",)


def classification_of(
    codes: tuple[str, ...], *, classifier: str, categories: Mapping[str, tuple[str, ...]] = LLAMA_GUARD_CATEGORIES
) -> Classification:
    """Each code's categories at 1.0. An `unsafe` without codes, or with codes the mapping does not know, scores nothing
    but keeps its labels (a reviewer sees them on the decision)."""
    scores = {category: 1.0 for code in codes for category in categories.get(code, ())}
    return Classification(classifier=classifier, scores=scores, labels=codes)


def llama_guard_prompt(text: str, *, role: Role = "user") -> str:
    """Llama Guard 3's task prompt for one message, for a model whose chat template does not write it."""
    speaker = "User" if role == "user" else "Agent"
    hazards = "\n".join(f"{code}: {name}." for code, name in LLAMA_GUARD_HAZARDS.items())
    return (
        f"Task: Check if there is unsafe content in '{speaker}' messages in conversations according to our safety policy "
        "with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{hazards}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>\n\n{speaker}: {text}\n\n<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {speaker} message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories."
    )
