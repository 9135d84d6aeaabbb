"""Token-delta coalescing: first piece at once, bounded batches, nothing lost, source closed."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.coalesce import coalesce


class RecordingSource:
    """An async generator of pieces that records when each was produced and whether it closed."""

    def __init__(self, pieces: Sequence[str], *, gap_s: float = 0.0, then_block: bool = False):
        self.pieces = list(pieces)
        self.gap_s = gap_s
        self.then_block = then_block
        self.produced_at: list[float] = []
        self.closed = False

    async def stream(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        try:
            for index, piece in enumerate(self.pieces):
                if index:
                    await asyncio.sleep(self.gap_s)
                self.produced_at.append(loop.time())
                yield piece
            if self.then_block:
                await asyncio.Event().wait()
        finally:
            self.closed = True


async def received(chunks: AsyncIterator[str]) -> list[str]:
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        return [chunk async for chunk in chunks]


def other_tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_empty_source_yields_nothing_and_is_closed() -> None:
    source = RecordingSource([])

    assert await received(coalesce(source.stream())) == []
    assert source.closed


async def test_first_piece_is_yielded_before_the_second_exists() -> None:
    source = RecordingSource(["Hello", " world"], gap_s=0.5)
    chunks = coalesce(source.stream(), max_delay_s=10.0)
    try:
        first = await asyncio.wait_for(anext(chunks), timeout=0.25)
        assert first == "Hello"
        assert len(source.produced_at) == 1
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    assert source.closed


async def test_fast_source_is_flushed_by_count() -> None:
    pieces = [f" t{i}" for i in range(20)]
    source = RecordingSource(pieces)

    chunks = await received(coalesce(source.stream(), max_tokens=8, max_delay_s=10.0))

    assert chunks == [
        " t0",
        "".join(pieces[1:9]),
        "".join(pieces[9:17]),
        "".join(pieces[17:]),
    ]
    assert source.closed


async def test_slow_source_is_flushed_by_time_without_waiting_for_the_next_piece() -> None:
    source = RecordingSource(["a", "b", "c"], gap_s=0.3)
    loop = asyncio.get_running_loop()
    arrivals: list[tuple[str, float]] = []

    async for chunk in coalesce(source.stream(), max_tokens=8, max_delay_s=0.03):
        arrivals.append((chunk, loop.time()))

    # Without a timed wait "b" would sit in the batch until "c" arrived, and come out as "bc".
    assert [chunk for chunk, _ in arrivals] == ["a", "b", "c"]
    b_produced_at, c_produced_at = source.produced_at[1], source.produced_at[2]
    b_arrived_at = arrivals[1][1]
    assert b_arrived_at < c_produced_at
    assert b_arrived_at - b_produced_at < 0.25


async def test_time_limit_counts_from_the_batch_first_piece_not_the_latest() -> None:
    pieces = [f"<{i}>" for i in range(12)]
    source = RecordingSource(pieces, gap_s=0.1)

    chunks = await received(coalesce(source.stream(), max_tokens=100, max_delay_s=0.25))

    # A steady stream faster than the limit still gets flushed every ~0.25 s, i.e. every ~3
    # pieces; a limit counted from the latest piece would hold everything until the end.
    later_batches = [re.findall(r"<\d+>", chunk) for chunk in chunks[1:]]
    assert len(later_batches) >= 3
    assert all(1 <= len(batch) <= 4 for batch in later_batches)
    assert "".join(chunks) == "".join(pieces)


async def test_consumer_stopping_early_closes_the_source_and_leaves_no_task() -> None:
    source = RecordingSource(["a", "b"], gap_s=0.01, then_block=True)
    chunks = coalesce(source.stream(), max_delay_s=0.02)

    assert await anext(chunks) == "a"
    # "b" is flushed by time while the fetch of the next piece is still pending.
    assert await asyncio.wait_for(anext(chunks), timeout=1.0) == "b"
    await chunks.aclose()  # type: ignore[attr-defined]

    assert source.closed
    assert other_tasks() == set()


async def test_cancelling_the_consumer_closes_the_source_and_propagates() -> None:
    source = RecordingSource(["a", "b"], gap_s=0.0, then_block=True)
    first_seen = asyncio.Event()

    async def consume() -> None:
        async for _ in coalesce(source.stream(), max_delay_s=10.0):
            first_seen.set()

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(first_seen.wait(), timeout=1.0)
    await asyncio.sleep(0.01)  # let it buffer "b" and start waiting on the blocked source
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer

    assert source.closed
    assert other_tasks() == set()


async def test_source_error_propagates_and_the_source_is_closed() -> None:
    closed = False

    async def failing() -> AsyncIterator[str]:
        nonlocal closed
        try:
            yield "a"
            yield "b"
            raise ValueError("engine failed")
        finally:
            closed = True

    with pytest.raises(ValueError, match="engine failed"):
        await received(coalesce(failing()))
    assert closed
    assert other_tasks() == set()


async def test_plain_async_iterator_without_aclose_is_accepted() -> None:
    class Countdown:
        def __init__(self) -> None:
            self.left = 3

        def __aiter__(self) -> Countdown:
            return self

        async def __anext__(self) -> str:
            if not self.left:
                raise StopAsyncIteration
            self.left -= 1
            await asyncio.sleep(0)
            return str(self.left)

    assert await received(coalesce(Countdown(), max_tokens=8, max_delay_s=10.0)) == ["2", "10"]


async def test_rejects_a_batch_size_below_one() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        await anext(coalesce(RecordingSource(["a"]).stream(), max_tokens=0))


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.0, 0.003]), max_size=40),
    max_tokens=st.integers(min_value=1, max_value=10),
)
def test_nothing_is_lost_reordered_or_over_batched(gaps: list[float], max_tokens: int) -> None:
    pieces = [f"<{index}>" for index in range(len(gaps))]

    async def source() -> AsyncIterator[str]:
        for piece, gap_s in zip(pieces, gaps, strict=True):
            await asyncio.sleep(gap_s)
            yield piece

    async def run() -> list[str]:
        return await received(coalesce(source(), max_tokens=max_tokens, max_delay_s=0.002))

    chunks = asyncio.run(run())

    batches = [re.findall(r"<\d+>", chunk) for chunk in chunks]
    assert [piece for batch in batches for piece in batch] == pieces
    assert all(chunk == "".join(batch) for chunk, batch in zip(chunks, batches, strict=True))
    if pieces:
        assert chunks[0] == pieces[0], "the first piece travels alone"
    assert all(1 <= len(batch) <= max_tokens for batch in batches)
