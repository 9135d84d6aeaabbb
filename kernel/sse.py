"""Server-Sent Events: a pure encoder for the server and a WHATWG-conformant decoder for clients."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from kernel.errors import FieldError, InvalidRequest

__all__ = [
    "SSE_MEDIA_TYPE",
    "SSEDecoder",
    "ServerSentEvent",
    "encode_comment",
    "encode_event",
    "encode_retry",
    "iter_sse",
    "parse_last_event_id",
]

SSE_MEDIA_TYPE = "text/event-stream"

# The event-stream grammar ends a line at CRLF, a lone LF or a lone CR.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_DECIMAL = re.compile(r"[0-9]+")
# Event ids are run-event sequence numbers; more digits than an int64 holds is not one.
_MAX_EVENT_ID_DIGITS = 19


def _single_line(value: str, *, what: str) -> str:
    if _LINE_BREAK.search(value):
        raise ValueError(f"SSE {what} must not contain a line break: {value!r}")
    return value


def encode_event(*, event_id: str | int | None, event_type: str, data: Mapping[str, Any]) -> bytes:
    """One complete event: `id:`, `event:`, `data:` lines and the blank line that dispatches it."""
    lines: list[str] = []
    if event_id is not None:
        if isinstance(event_id, bool):
            raise TypeError("event_id must be a str or an int, not a bool")
        event_id_text = _single_line(str(event_id), what="id")
        if "\0" in event_id_text:
            raise ValueError("SSE id must not contain NUL: clients would ignore it")
        lines.append(f"id: {event_id_text}")
    if not event_type:
        raise ValueError("SSE event type must not be empty")
    lines.append(f"event: {_single_line(event_type, what='event type')}")
    # Compact JSON has no raw line breaks (they are escaped inside strings), but the split
    # keeps the frame valid even if that ever changes: one `data:` line per line.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(payload))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_comment(text: str = "ping") -> bytes:
    """A comment block; clients ignore it, proxies see traffic (keep-alive)."""
    return ("".join(f": {line}\n" for line in _LINE_BREAK.split(text)) + "\n").encode("utf-8")


def encode_retry(milliseconds: int) -> bytes:
    """Tell the client how long to wait before reconnecting."""
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int) or milliseconds < 0:
        raise ValueError(f"retry must be a non-negative int of milliseconds, got {milliseconds!r}")
    return f"retry: {milliseconds}\n\n".encode("ascii")


def parse_last_event_id(header: str | None) -> int | None:
    """The `Last-Event-ID` a reconnecting client sends: absent or empty means from the start."""
    if header is None or not header.strip():
        return None
    value = header.strip()
    if not _DECIMAL.fullmatch(value) or len(value) > _MAX_EVENT_ID_DIGITS:
        raise InvalidRequest(
            detail=f"Last-Event-ID must be a non-negative integer event id, got {value[:32]!r}",
            errors=[FieldError(field="Last-Event-ID", message="must be a non-negative integer")],
        )
    return int(value)


@dataclass(frozen=True, kw_only=True)
class ServerSentEvent:
    """A dispatched event as a browser's EventSource would see it."""

    event: str
    data: str
    # The last event id *as of dispatch*: per the spec it carries over to later events that
    # have no `id:` line, which is exactly what a client resumes from.
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEDecoder:
    """Feed it lines (without terminators); it returns an event when a blank line ends one.

    Follows https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
    for the fields `event`, `data`, `id` and `retry`; any other field is ignored.
    """

    def __init__(self) -> None:
        self._event_type = ""
        self._data_lines: list[str] = []
        self._saw_data = False
        self._at_stream_start = True
        self.last_event_id: str | None = None
        self.reconnection_time_ms: int | None = None

    def decode(self, line: str) -> ServerSentEvent | None:
        if self._at_stream_start:
            self._at_stream_start = False
            line = line.removeprefix("\ufeff")
        line = _without_terminator(line)
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        match field:
            case "event":
                self._event_type = value
            case "data":
                self._data_lines.append(value)
                self._saw_data = True
            case "id":
                if "\0" not in value:
                    # An empty `id:` resets the last event id, as the spec says.
                    self.last_event_id = value or None
            case "retry":
                if _DECIMAL.fullmatch(value):
                    self.reconnection_time_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        saw_data, data_lines, event_type = self._saw_data, self._data_lines, self._event_type
        self._data_lines, self._saw_data, self._event_type = [], False, ""
        if not saw_data:
            return None
        return ServerSentEvent(
            event=event_type or "message",
            data="\n".join(data_lines),
            id=self.last_event_id,
        )


def _without_terminator(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith(("\n", "\r")):
        return line[:-1]
    return line


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    """Events from a stream of lines, e.g. `httpx.Response.aiter_lines()`.

    A trailing event with no blank line after it is dropped, as the spec requires: a
    connection cut mid-event must not surface half an event. The line iterator is closed when
    this generator finishes or is closed, so an abandoned stream releases its connection.
    """
    decoder = SSEDecoder()
    try:
        async for line in lines:
            # aiter_lines() already splits on CR, LF and CRLF; other sources may hand over
            # chunks that hold several lines.
            for single_line in _LINE_BREAK.split(_without_terminator(line)):
                event = decoder.decode(single_line)
                if event is not None:
                    yield event
    finally:
        close = getattr(lines, "aclose", None)
        if close is not None:
            await close()
