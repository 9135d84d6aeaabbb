"""OpenAI's `chat.completion` and `chat.completion.chunk` objects built from a run's events (pure), and SSE framing."""

from __future__ import annotations

import json
from dataclasses import dataclass

from events.runs import RunFinished
from events.values import Usage

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": ping\n\n"  # an SSE comment: clients skip it, proxies see traffic


@dataclass(frozen=True, kw_only=True)
class Completion:
    """What every object of one completion repeats."""

    completion_id: str
    created: int  # epoch seconds
    model: str

    def header(self, kind: str) -> dict:
        return {"id": self.completion_id, "object": kind, "created": self.created, "model": self.model, "system_fingerprint": None}


def completion_id_for(run_id: str) -> str:
    return f"chatcmpl-{run_id}"


def usage_json(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def finish_reason_of(finished: RunFinished) -> str:
    """`content_filter` when a safety stage changed the answer (the run names the stored text), else `stop`."""
    return "content_filter" if finished.text is not None else "stop"


def answer_text(deltas: list[str], finished: RunFinished) -> str:
    """The stored answer: the run's replacement text when a safety stage set one, else what it streamed."""
    return finished.text if finished.text is not None else "".join(deltas)


def chat_completion(completion: Completion, *, text: str, finished: RunFinished) -> dict:
    return {
        **completion.header("chat.completion"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason_of(finished),
            }
        ],
        "usage": usage_json(finished.usage),
    }


def chunk(completion: Completion, *, delta: dict, finish_reason: str | None = None, include_usage: bool = False) -> dict:
    shape = {
        **completion.header("chat.completion.chunk"),
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage:
        shape["usage"] = None  # as OpenAI does: only the last chunk carries usage
    return shape


def usage_chunk(completion: Completion, usage: Usage) -> dict:
    """The last chunk when `stream_options.include_usage`: no choices, the run's usage."""
    return {**completion.header("chat.completion.chunk"), "choices": [], "usage": usage_json(usage)}


def sse_data(shape: dict) -> bytes:
    return f"data: {json.dumps(shape, ensure_ascii=False, separators=(',', ':'))}\n\n".encode("utf-8")
