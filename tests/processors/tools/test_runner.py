"""The tool runner on a real embedded log: transient failures are tried again within the call's timeout, and a
tool that keeps failing is skipped, saying why. The executor is a double (an edge); time is a fake clock that
the double's calls and the runner's waits advance, so nothing really waits."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from events.catalog import EVENT_TYPES
from events.embedded import EmbeddedLog
from events.tools import ToolCallFinished, ToolCallRequested, ToolCallStarted
from events.topics import RUN_EVENTS
from events.values import ToolSpec
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope, utc_now
from kernel.runtime import encode, run_processor
from processors.tools.breaker import ToolBreakerPolicy, ToolBreakers
from processors.tools.catalog import ToolResult
from processors.tools.offered import ToolCatalog
from processors.tools.runner import RetryPolicy, ToolRunner

ACTOR = Actor(user_id="u", org_id="o", workspace_id="w")
CODEC = AvroCodec(payload_types=EVENT_TYPES)
RUN = "run_1"
REPORT_DEADLINE_S = 20.0  # generous: a loaded machine is slow, and a passing test never waits this long


@dataclass(kw_only=True)
class FakeTime:
    """The runner's clock and its waits: a wait only moves the clock on."""

    now: float = 0.0
    waits: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass(frozen=True, kw_only=True)
class Call:
    tool: str
    idempotency_key: str
    timeout_s: float
    at: float


class ScriptedTool:
    """A `ToolExecutor` that answers from a script (its last answer repeats), each call taking `takes_s` of fake time
    and timing out, as a real executor does, when that is more than the call's `timeout_s`."""

    def __init__(self, fake_time: FakeTime, *answers: ToolResult, takes_s: float = 0.01) -> None:
        self.fake_time = fake_time
        self.answers = list(answers)
        self.takes_s = takes_s
        self.calls: list[Call] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_tools(self, *, actor: Actor) -> list[ToolSpec]:
        return []

    def unavailable(self, *, actor: Actor) -> dict[str, str]:
        return {}

    async def call(self, tool: str, arguments: dict, *, actor: Actor, idempotency_key: str, timeout_s: float) -> ToolResult:
        self.calls.append(Call(tool=tool, idempotency_key=idempotency_key, timeout_s=timeout_s, at=self.fake_time.now))
        if self.takes_s > timeout_s:
            self.fake_time.now += max(timeout_s, 0.0)
            return ToolResult.timed_out(timeout_s, duration_ms=round(timeout_s * 1000))
        self.fake_time.now += self.takes_s
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer


def down() -> ToolResult:
    return ToolResult.unavailable("search: connection refused", duration_ms=10)


def boom() -> ToolResult:
    return ToolResult.failed("boom", duration_ms=10)


def sunny() -> ToolResult:
    return ToolResult.completed("sunny", duration_ms=10)


@dataclass(kw_only=True)
class Harness:
    log: EmbeddedLog
    fake_time: FakeTime
    runner: ToolRunner | None = None

    async def start(self, tool: ScriptedTool, *, breakers: ToolBreakers | None = None) -> None:
        self.runner = ToolRunner(
            log=self.log, codec=CODEC, executor=tool, catalog=ToolCatalog(executor=tool, policies={}),
            breakers=breakers, clock=self.fake_time.clock, sleep=self.fake_time.sleep,
        )
        self._task = asyncio.create_task(run_processor(self.runner.processor(), log=self.log, codec=CODEC))

    async def stop(self) -> None:
        if self.runner is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            await self.runner.close()

    async def call(
        self, call_id: str, *, tool: str = "search", idempotent: bool = False, timeout_s: float = 10.0
    ) -> tuple[list[ToolCallStarted], ToolCallFinished]:
        """Requests the call and waits for its report: the starts reported for it, and its finish."""
        request = ToolCallRequested(
            run_id=RUN, call_id=call_id, step=1, tool_name=tool, arguments='{"q": "x"}', attempt=1,
            idempotency_key=f"{RUN}:{call_id}", timeout_s=timeout_s, requested_at=utc_now(), idempotent=idempotent,
        )
        await self.log.append([encode(CODEC, Envelope.wrap(request, key=RUN, actor=ACTOR), topic=RUN_EVENTS)])
        deadline = time.monotonic() + REPORT_DEADLINE_S
        while True:
            events = [CODEC.decode(record.value).payload for record in await self.log.read(RUN_EVENTS, key=RUN)]
            mine = [event for event in events if getattr(event, "call_id", None) == call_id]
            finishes = [event for event in mine if isinstance(event, ToolCallFinished)]
            if finishes:
                assert len(finishes) == 1
                return [event for event in mine if isinstance(event, ToolCallStarted)], finishes[0]
            assert time.monotonic() < deadline, f"no report of {call_id} within {REPORT_DEADLINE_S} s"
            await asyncio.sleep(0.01)


@pytest.fixture
async def harness(embedded_log: EmbeddedLog) -> AsyncIterator[Harness]:
    harness = Harness(log=embedded_log, fake_time=FakeTime())
    try:
        yield harness
    finally:
        await harness.stop()


async def test_an_unavailable_tool_is_tried_again_after_growing_waits_and_its_answer_reported_once(harness: Harness) -> None:
    tool = ScriptedTool(harness.fake_time, down(), down(), sunny())
    await harness.start(tool)
    starts, finish = await harness.call("call_1")
    assert (finish.status, finish.result, finish.attempt) == ("completed", "sunny", 1)
    assert len(starts) == 1 and starts[0].attempt == 1
    assert [call.idempotency_key for call in tool.calls] == ["run_1:call_1"] * 3
    first_wait, second_wait = harness.fake_time.waits
    assert 0.1 <= first_wait <= 0.2 and 0.2 <= second_wait <= 0.4  # 0.2 s then 0.4 s, up to half off for jitter
    assert finish.duration_ms == 30 + round(first_wait * 1000) + round(second_wait * 1000)


async def test_a_tool_that_stays_unavailable_is_tried_three_times_and_the_result_says_so(harness: Harness) -> None:
    tool = ScriptedTool(harness.fake_time, down())
    await harness.start(tool)
    _, finish = await harness.call("call_1")
    assert (finish.status, finish.result) == ("unavailable", "search: connection refused (after 3 tries)")
    assert len(tool.calls) == 3


async def test_a_failed_call_is_tried_again_only_when_its_tool_is_idempotent(harness: Harness) -> None:
    tool = ScriptedTool(harness.fake_time, boom(), sunny())
    await harness.start(tool)
    _, finish = await harness.call("call_1", idempotent=False)
    assert (finish.status, finish.result) == ("failed", "boom")  # it may have had its effect
    assert len(tool.calls) == 1
    _, finish = await harness.call("call_2", tool="weather", idempotent=True)
    assert (finish.status, finish.result) == ("completed", "sunny")


async def test_a_timed_out_call_is_not_tried_again(harness: Harness) -> None:
    # Even with time left over (the tool's own deadline was shorter): a timeout may have left work half done.
    tool = ScriptedTool(harness.fake_time, ToolResult.timed_out(2, duration_ms=2000), sunny())
    await harness.start(tool)
    _, finish = await harness.call("call_1", idempotent=True, timeout_s=10)
    assert (finish.status, finish.result) == ("timed_out", "timed out after 2 s")
    assert len(tool.calls) == 1 and harness.fake_time.waits == []


async def test_the_tries_share_the_calls_timeout_and_stop_when_the_next_wait_would_pass_it(harness: Harness) -> None:
    tool = ScriptedTool(harness.fake_time, down(), takes_s=0.4)
    await harness.start(tool)
    _, finish = await harness.call("call_1", timeout_s=1.0)
    # 0.4 s, a wait of at most 0.2 s, 0.4 s: at least 0.9 s gone, and the next wait is at least 0.2 s.
    [wait] = harness.fake_time.waits
    assert [call.timeout_s for call in tool.calls] == [1.0, pytest.approx(1.0 - 0.4 - wait)]
    assert finish.result == "search: connection refused (after 2 tries)"
    assert harness.fake_time.now <= 1.0


@pytest.mark.parametrize("takes_s", [0.05, 0.3, 0.45, 0.7, 0.95])
async def test_the_whole_call_never_runs_past_its_timeout(harness: Harness, takes_s: float) -> None:
    tool = ScriptedTool(harness.fake_time, down(), takes_s=takes_s)
    await harness.start(tool)
    await harness.call("call_1", timeout_s=1.0)
    assert harness.fake_time.now <= 1.0
    assert all(0 < call.timeout_s == pytest.approx(1.0 - call.at) for call in tool.calls)  # each try gets what is left


async def test_a_tool_that_keeps_failing_is_skipped_with_the_reason_until_a_probe_succeeds(harness: Harness) -> None:
    tool = ScriptedTool(harness.fake_time, boom(), boom(), boom(), sunny())
    await harness.start(tool, breakers=ToolBreakers(policy=ToolBreakerPolicy(failures_to_open=2, cool_down_s=30)))
    await harness.call("call_1")
    await harness.call("call_2")
    harness.fake_time.now += 7

    starts, refused = await harness.call("call_3")
    assert (refused.status, refused.result, refused.duration_ms) == (
        "unavailable", "skipped: search failed 2 times in a row (last: boom); it is tried again in 23 s", 0,
    )
    assert starts == [] and refused.runner_id != "" and len(tool.calls) == 2  # never sent to the tool

    harness.fake_time.now += 23  # cool-down over: one probe goes through, and fails
    _, probe = await harness.call("call_4")
    assert probe.result == "boom" and len(tool.calls) == 3
    _, refused = await harness.call("call_5")
    assert refused.result == "skipped: search failed 3 times in a row (last: boom); it is tried again in 30 s"

    harness.fake_time.now += 30  # the next probe succeeds: closed again
    _, probe = await harness.call("call_6")
    _, after = await harness.call("call_7")
    assert (probe.status, after.status, len(tool.calls)) == ("completed", "completed", 5)


async def test_tries_stop_once_the_breaker_opens_and_the_tools_own_answer_is_reported(harness: Harness) -> None:
    tool = ScriptedTool(harness.fake_time, down())
    await harness.start(tool, breakers=ToolBreakers(policy=ToolBreakerPolicy(failures_to_open=2)))
    _, finish = await harness.call("call_1")
    assert finish.result == "search: connection refused (after 2 tries)"
    assert len(tool.calls) == 2


def test_the_waits_double_up_to_their_cap_and_jitter_only_shortens_them() -> None:
    policy = RetryPolicy(max_tries=6, first_delay_s=0.2, max_delay_s=1.0)
    assert [policy.delay_s(retry, jitter=0) for retry in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay_s(2, jitter=0.999) == pytest.approx(0.2, abs=0.001)
