"""Windows of a streaming answer for the output check: every `window_chars` new characters, with some overlap.

The answer is checked while it streams, a window at a time, so a violation stops the run early (deltas
are provisional; the stored turn is what passed the final check of the whole answer). Each window
repeats the last `overlap_chars` of the one before, so a phrase cut by a window's edge is seen whole in
the next. Characters, not tokens: no tokenizer is needed, and 256 characters are about 64 tokens of
English prose.
"""

from __future__ import annotations

DEFAULT_WINDOW_CHARS = 256
DEFAULT_OVERLAP_CHARS = 64


class StreamWindows:
    """Collects an answer's deltas; `push` returns the next window to check once enough new text has come."""

    def __init__(self, *, window_chars: int = DEFAULT_WINDOW_CHARS, overlap_chars: int = DEFAULT_OVERLAP_CHARS) -> None:
        if window_chars < 1 or not 0 <= overlap_chars < window_chars:
            raise ValueError(f"need window_chars >= 1 and 0 <= overlap_chars < window_chars, got {window_chars}, {overlap_chars}")
        self._window_chars = window_chars
        self._overlap_chars = overlap_chars
        self._parts: list[str] = []
        self._length = 0
        self._checked = 0  # characters already inside a window
        self.windows = 0  # windows handed out so far (the next one's number, for its subject: "window:<n>")

    @property
    def text(self) -> str:
        """The answer so far."""
        joined = "".join(self._parts)
        self._parts = [joined]
        return joined

    def push(self, delta: str) -> str | None:
        """Adds a delta; returns a window when `window_chars` characters have come since the last one."""
        self._parts.append(delta)
        self._length += len(delta)
        if self._length - self._checked < self._window_chars:
            return None
        return self._window()

    def rest(self) -> str | None:
        """At the end of the stream: the text no window has covered yet (with its overlap), or None."""
        return self._window() if self._length > self._checked else None

    def _window(self) -> str:
        window = self.text[max(0, self._checked - self._overlap_chars) :]
        self._checked = self._length
        self.windows += 1
        return window
