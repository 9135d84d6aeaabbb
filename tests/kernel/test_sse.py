"""SSE: exact wire format of the encoder, the WHATWG decoder rules, and a real round trip."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from kernel.sse import (
    SSE_MEDIA_TYPE,
    SSEDecoder,
    ServerSentEvent,
    encode_comment,
    encode_event,
    encode_retry,
    iter_sse,
    parse_last_event_id,
)
from kernel.errors import InvalidRequest


async def lines_of(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def collect(*lines: str) -> list[ServerSentEvent]:
    return [event async for event in iter_sse(lines_of(*lines))]


def test_event_is_id_event_data_then_a_blank_line() -> None:
    frame = encode_event(event_id=7, event_type="assistant.delta", data={"text": "héllo\nworld"})

    assert frame == 'id: 7\nevent: assistant.delta\ndata: {"text":"héllo\\nworld"}\n\n'.encode()


def test_event_without_id_has_no_id_line() -> None:
    assert encode_event(event_id=None, event_type="run.started", data={}) == b"event: run.started\ndata: {}\n\n"


@pytest.mark.parametrize(
    ("event_id", "event_type"),
    [("1\n2", "x"), ("1", "run\rstarted"), ("a\0b", "x"), ("1", "")],
)
def test_values_that_would_break_the_frame_are_refused(event_id: str, event_type: str) -> None:
    with pytest.raises(ValueError):
        encode_event(event_id=event_id, event_type=event_type, data={})


def test_comment_and_retry() -> None:
    assert encode_comment() == b": ping\n\n"
    assert encode_comment("two\nlines") == b": two\n: lines\n\n"
    assert encode_retry(3000) == b"retry: 3000\n\n"
    with pytest.raises(ValueError):
        encode_retry(-1)


@pytest.mark.parametrize(("header", "expected"), [(None, None), ("", None), ("  ", None), ("0", 0), (" 42 ", 42)])
def test_last_event_id_parses(header: str | None, expected: int | None) -> None:
    assert parse_last_event_id(header) == expected


@pytest.mark.parametrize("header", ["-1", "abc", "1.5", "²", "1" * 20])
def test_bad_last_event_id_is_invalid_request(header: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_last_event_id(header)

    assert caught.value.errors[0].field == "Last-Event-ID"


async def test_encoded_events_decode_back() -> None:
    stream = b"".join(
        [
            encode_retry(1500),
            encode_event(event_id=1, event_type="run.started", data={"runId": "run_1"}),
            encode_comment(),
            encode_event(event_id=2, event_type="assistant.delta", data={"text": "line1\nline2"}),
        ]
    ).decode()

    events = await collect(*stream.split("\n"))

    assert events == [
        ServerSentEvent(id="1", event="run.started", data='{"runId":"run_1"}'),
        ServerSentEvent(id="2", event="assistant.delta", data='{"text":"line1\\nline2"}'),
    ]
    assert events[1].json() == {"text": "line1\nline2"}


async def test_multiple_data_lines_join_with_newlines_and_type_defaults_to_message() -> None:
    events = await collect("data: first", "data:second", "data", "")

    assert events == [ServerSentEvent(event="message", data="first\nsecond\n", id=None)]


async def test_only_one_leading_space_is_stripped() -> None:
    assert (await collect("data:  two spaces", ""))[0].data == " two spaces"


async def test_event_without_data_is_not_dispatched() -> None:
    assert await collect("event: lonely", "id: 5", "", "data: x", "") == [
        ServerSentEvent(event="message", data="x", id="5")
    ]


async def test_last_event_id_carries_over_and_an_empty_id_resets_it() -> None:
    events = await collect("id: 9", "data: a", "", "data: b", "", "id", "data: c", "")

    assert [event.id for event in events] == ["9", "9", None]


async def test_id_with_nul_is_ignored() -> None:
    events = await collect("id: 1", "data: a", "", "id: 2\0", "data: b", "")

    assert [event.id for event in events] == ["1", "1"]


async def test_unfinished_event_at_end_of_stream_is_dropped() -> None:
    assert await collect("data: complete", "", "data: cut off") == [
        ServerSentEvent(event="message", data="complete", id=None)
    ]


async def test_bom_and_unknown_fields_are_ignored_and_chunks_with_many_lines_are_split() -> None:
    events = await collect("\ufeffdata: a", "foo: bar", "\n", "event: e\r\ndata: b\r\n\r\n")

    assert [(event.event, event.data) for event in events] == [("message", "a"), ("e", "b")]


def test_decoder_tracks_retry_even_without_an_event() -> None:
    decoder = SSEDecoder()

    for line in ["retry: 2500", "", "retry: soon", ""]:
        assert decoder.decode(line) is None

    assert decoder.reconnection_time_ms == 2500


async def test_iter_sse_closes_its_source_when_abandoned() -> None:
    closed = False

    async def endless() -> AsyncIterator[str]:
        nonlocal closed
        try:
            while True:
                yield "data: tick"
                yield ""
        finally:
            closed = True

    events = iter_sse(endless())
    assert (await anext(events)).data == "tick"
    await events.aclose()

    assert closed


async def test_round_trip_over_http_with_httpx() -> None:
    async def stream(request: Request) -> StreamingResponse:
        last_seen = parse_last_event_id(request.headers.get("last-event-id")) or 0

        async def frames() -> AsyncIterator[bytes]:
            yield encode_retry(1000)
            for seq in range(last_seen + 1, 4):
                yield encode_event(event_id=seq, event_type="assistant.delta", data={"text": f"t{seq}"})
                yield encode_comment()

        return StreamingResponse(frames(), media_type=SSE_MEDIA_TYPE)

    app = Starlette(routes=[Route("/stream", stream)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        async with client.stream("GET", "/stream", headers={"Last-Event-ID": "1"}) as response:
            assert response.headers["content-type"].startswith(SSE_MEDIA_TYPE)
            events = [event async for event in iter_sse(response.aiter_lines())]

    assert [(event.id, event.json()) for event in events] == [("2", {"text": "t2"}), ("3", {"text": "t3"})]
