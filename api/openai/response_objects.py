"""OpenAI's `response` object and its stream events, folded from a run's events (pure).

The stream is a function of the run's events on the log: replaying them gives the same events with the same
`sequence_number`s, which is what lets `GET /responses/{id}?stream=true&starting_after=N` resume from the log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from events.runs import AssistantDelta, GenerationStarted, RunFinished, RunStarted
from events.values import Usage

# The stream event that ends a response of this status; `cancelled` and `incomplete` end with `response.incomplete`.
TERMINAL_EVENTS = {"completed": "response.completed", "failed": "response.failed"}


def message_id_for(response_id: str) -> str:
    return f"msg_{response_id}"


def usage_json(usage: Usage) -> dict:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
    }


@dataclass(kw_only=True)
class ResponseState:
    """One response as its run's events have made it so far."""

    response_id: str  # the run id
    model: str
    created_at: int  # epoch seconds
    background: bool = False
    instructions: str | None = None
    previous_response_id: str | None = None
    status: str = "in_progress"
    started: bool = False
    deltas: list[str] = field(default_factory=list)
    final_text: str | None = None  # the stored answer once the run finished
    usage: Usage | None = None
    error: dict | None = None
    incomplete_reason: str | None = None

    @property
    def text(self) -> str:
        return self.final_text if self.final_text is not None else "".join(self.deltas)

    def finish(self, finished: RunFinished) -> None:
        self.usage = finished.usage
        self.final_text = finished.text if finished.text is not None else "".join(self.deltas)
        reason = finished.reason or finished.status
        if finished.status == "cancelled":
            self.status = "cancelled"
        elif finished.status == "failed":
            self.status, self.error = "failed", {"code": "server_error", "message": f"the run failed: {reason}"}
        elif finished.text is not None:  # a safety stage refused, redacted or replaced the answer
            self.status, self.incomplete_reason = "incomplete", "content_filter"
        else:
            self.status = "completed"

    @property
    def item_status(self) -> str:
        return {"in_progress": "in_progress", "completed": "completed"}.get(self.status, "incomplete")

    def part(self, text: str) -> dict:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def item(self, *, with_text: bool = True) -> dict:
        return {
            "type": "message", "id": message_id_for(self.response_id), "status": self.item_status, "role": "assistant",
            "content": [self.part(self.text)] if with_text else [],
        }

    def json(self) -> dict:
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": self.background,
            "error": self.error,
            "incomplete_details": {"reason": self.incomplete_reason} if self.incomplete_reason else None,
            "instructions": self.instructions,
            "max_output_tokens": None,
            "model": self.model,
            "output": [self.item()] if self.started else [],
            "parallel_tool_calls": False,
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "store": True,
            "temperature": None,
            "text": {"format": {"type": "text"}},
            "tool_choice": "none",
            "tools": [],
            "top_p": None,
            "truncation": "disabled",
            "usage": usage_json(self.usage) if self.usage is not None else None,
            "metadata": {},
        }


class ResponseEvents:
    """Turns a run's events into the response's stream events, numbered from 0 in log order."""

    def __init__(self, state: ResponseState) -> None:
        self.state = state
        self._sequence_number = -1

    def _event(self, event_type: str, **members: object) -> dict:
        self._sequence_number += 1
        return {"type": event_type, "sequence_number": self._sequence_number, **members}

    def _where(self) -> dict:
        return {"item_id": message_id_for(self.state.response_id), "output_index": 0, "content_index": 0}

    def on(self, event: object) -> list[dict]:
        state = self.state
        match event:
            case RunStarted():
                created = [self._event("response.created", response=state.json())]
                state.started = True
                return [
                    *created,
                    self._event("response.in_progress", response=state.json()),
                    self._event("response.output_item.added", output_index=0, item=state.item(with_text=False)),
                    self._event("response.content_part.added", **self._where(), part=state.part("")),
                ]
            case GenerationStarted() if not state.model:
                state.model = event.pool
            case AssistantDelta():
                state.deltas.append(event.text)
                return [self._event("response.output_text.delta", **self._where(), delta=event.text, logprobs=[])]
            case RunFinished():
                state.finish(event)
                terminal = TERMINAL_EVENTS.get(state.status, "response.incomplete")
                return [
                    self._event("response.output_text.done", **self._where(), text=state.text, logprobs=[]),
                    self._event("response.content_part.done", **self._where(), part=state.part(state.text)),
                    self._event("response.output_item.done", output_index=0, item=state.item()),
                    self._event(terminal, response=state.json()),
                ]
        return []


def sse_event(event: dict) -> bytes:
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode("utf-8")
