"""Windows of a streaming answer: one every `window_chars` new characters, each repeating the last `overlap_chars`."""

from __future__ import annotations

import pytest

from processors.safety.windows import StreamWindows


def test_a_window_comes_once_enough_new_text_has_streamed() -> None:
    windows = StreamWindows(window_chars=10, overlap_chars=3)
    assert windows.push("abcd") is None
    assert windows.push("efgh") is None
    assert windows.push("ijkl") == "abcdefghijkl"
    assert windows.push("mnopqrstu") is None
    assert windows.push("v") == "jklmnopqrstuv"  # the last 3 of the window before, then the new 10
    assert windows.windows == 2


def test_the_rest_covers_the_tail_no_window_did() -> None:
    windows = StreamWindows(window_chars=10, overlap_chars=2)
    windows.push("0123456789")
    windows.push("abc")
    assert windows.rest() == "89abc"
    assert windows.rest() is None
    assert windows.text == "0123456789abc"


def test_a_short_answer_is_one_window_at_the_end() -> None:
    windows = StreamWindows()
    assert windows.push("Hello there.") is None
    assert windows.rest() == "Hello there."
    assert StreamWindows().rest() is None


@pytest.mark.parametrize(("window", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_nonsense_sizes_are_refused(window: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        StreamWindows(window_chars=window, overlap_chars=overlap)
