"""One turn on a Kafka fleet is one trace across processes.

Every process of a fleet (two API instances, the decider and projector, the prompt builder, an inference worker, the
ingester) exports its spans by OTLP/HTTP to a collector in this test, as the standard `OTEL_*` variables tell it. A
turn's spans, from at least four processes, form one tree: one trace id, exactly one root (the request that posted
the turn), every parent present, and each stage of the turn in it.
"""

import asyncio
import time

import pytest

import e2e_server
import trace_collector
from kafka_broker import TansuBroker

pytestmark = [pytest.mark.slow, pytest.mark.alone]

TURN_ROUTE = "POST /v1/conversations/{conversation_id}/turns"
# The turn's stages, by span name (the generation's is `chat <model>`: the scripted engine's model is `scripted`).
STAGES = {
    TURN_ROUTE, "command SubmitTurn", "decider", "prompt-builder", "route", "queue wait", "chat scripted",
    "read-models",
}


async def test_one_turn_is_one_trace_across_the_fleets_processes(clickhouse_server, tmp_path) -> None:
    collector = trace_collector.OtlpCollector().start()
    broker = TansuBroker(log_path=tmp_path / "tansu.log")  # a broker of its own: no other fleet's groups or topics
    await asyncio.to_thread(broker.start)
    await clickhouse_server.create_database("traces")
    fleet = e2e_server.TurnlogFleet(
        data_dir=tmp_path / "data",
        log_url=broker.log_url,
        store_url=clickhouse_server.url("traces"),
        answer_tokens=8,
        env=collector.env(schedule_delay_ms=100),
    )
    try:
        await asyncio.to_thread(fleet.start)
        user = fleet.new_user()
        async with user.client() as http:
            conversation_id = await e2e_server.create_conversation(http, user.workspace)
            accepted = await e2e_server.submit_turn(http, conversation_id, "one trace, please")
            run = await e2e_server.wait_for_run(http, accepted["runId"], timeout_s=30)
        assert run["status"] == "completed"
        turn = await _the_turns_trace(collector, deadline_s=30)
    finally:
        await asyncio.to_thread(fleet.stop)
        await asyncio.to_thread(broker.stop)
        collector.stop()

    by_id = {span.span_id: span for span in turn}
    roots = [span for span in turn if span.parent_id is None]
    assert [root.name for root in roots] == [TURN_ROUTE]
    assert all(span.parent_id in by_id for span in turn if span.parent_id is not None), _tree(turn)
    assert len({span.trace_id for span in turn}) == 1
    assert STAGES <= {span.name for span in turn}, _tree(turn)
    processes = {span.resource["service.instance.id"] for span in turn}
    assert len(processes) >= 4, _tree(turn)  # an API, the decider's, the prompt builder's, the inference worker's
    [generation] = [span for span in turn if span.name == "chat scripted"]
    assert "first_token" in generation.events
    assert generation.attributes["gen_ai.usage.output_tokens"] == 8
    # The stages chain across processes: the worker's generation descends from the prompt builder's reaction,
    # which descends from the decider's, which descends from the command the request sent.
    assert _ancestry(generation, by_id) == ["prompt-builder", "decider", "command SubmitTurn", TURN_ROUTE], _tree(turn)


async def _the_turns_trace(collector: trace_collector.OtlpCollector, *, deadline_s: float) -> list:
    """The spans of the trace the turn's POST started, once every stage is there and every parent is in (spans arrive
    in batches from each process, in any order)."""
    deadline = time.monotonic() + deadline_s
    while True:
        spans = collector.spans()
        posts = [span for span in spans if span.name == TURN_ROUTE]
        turn = [span for span in spans if posts and span.trace_id == posts[0].trace_id]
        span_ids = {span.span_id for span in turn}
        complete = STAGES <= {span.name for span in turn} and all(
            span.parent_id is None or span.parent_id in span_ids for span in turn
        )
        if complete:
            return turn
        if time.monotonic() > deadline:
            raise AssertionError(f"the turn's trace was not complete after {deadline_s} s:\n{_tree(turn or spans)}")
        await asyncio.sleep(0.1)


def _ancestry(span, by_id: dict) -> list[str]:
    names = []
    while span.parent_id is not None and span.parent_id in by_id:
        span = by_id[span.parent_id]
        names.append(span.name)
    return names


def _tree(spans) -> str:
    """The spans as an indented tree, for a failure's message."""
    children: dict[str | None, list] = {}
    ids = {span.span_id for span in spans}
    for span in sorted(spans, key=lambda span: span.start_ns):
        children.setdefault(span.parent_id if span.parent_id in ids else None, []).append(span)
    lines: list[str] = []

    def show(span, depth: int) -> None:
        orphan = " (parent missing)" if depth == 0 and span.parent_id is not None else ""
        lines.append(f"{'  ' * depth}{span.name} [{span.resource.get('service.name')}]{orphan}")
        for child in children.get(span.span_id, []):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)
    return "\n".join(lines)
