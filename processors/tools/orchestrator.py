"""The tool loop's processor: applies `loop.decide` to each run's tool events, and queues the run's next model step.

It follows `run-events` (proposals from inference workers, approvals from the API, starts and
finishes from runners) and `conversation-events` (cancellations), one run's state folded from its
own events. When a step's calls have all finished it appends the next `InferenceRequested` to the
topic the step came from, so the run goes on with no client connected. A `Tick` every second ends
approvals that expired, takes back calls whose runner vanished and enforces the run's wall clock
(ticks go through the log, so they are decided in order with everything else); while a run waits
on tools its lease is renewed, so the watchdog does not take it for dead.

Ticks come only for the runs this process knows to be open, so a loop that starts (after a crash, say)
first looks for the runs an earlier process left open: each tick also commits a mark on the log
(`TOOL_LOOP_OPEN_GROUP`, a position only) below which no open run has its latest event, and the new
loop reads `run-events` from there and tracks again the runs it finds open and not finished.

With safety policies, two stages run here (`processors/safety/stages.py`): the tool stage checks each new
call's arguments before `decide` (which stays pure: the refusals go in as an input, and a refused call
finishes `not_allowed` with the policy's reason), and the context stage checks the step's results before
they enter the next step's prompt (fenced or dropped there). Their decisions go on the run's events.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime

from commands.catalog import FinishRun
from events.conversation import RunCancellationRequested
from events.runs import InferenceRequested, RunBackgrounded, RunFinished, RunHeartbeat, RunStarted
from events.tools import (
    ToolApprovalDecided,
    ToolApprovalRequested,
    ToolCallFinished,
    ToolCallRequested,
    ToolCallsProposed,
    ToolCallStarted,
    ToolLoopTicked,
    ToolStepCompleted,
)
from events.topics import COMMANDS, CONVERSATION_EVENTS, RUN_EVENTS
from events.values import ToolCallSummary, Usage
from kernel import tracing
from kernel.codec import AvroCodec, UndecodableMessage
from kernel.envelope import Actor, Envelope, utc_now
from kernel.keyed_state import KeyedStates
from kernel.log import ConsumerCommit, EventLog, OutgoingRecord, TopicPartition
from kernel.runtime import Delivery, Processor, encode
from processors.safety.stages import ContextScreening, RunSubject, SafetyStages
from processors.tools.continuation import CallResult, next_step
from processors.tools.loop import LoopBudget, LoopState, RunCancelled, ToolRules, decide, evolve, fold

logger = logging.getLogger(__name__)

TOOL_LOOP_GROUP = "tool-loop"
# Not a consumer: its committed offsets in `run-events` are where a restarted loop looks for open runs.
TOOL_LOOP_OPEN_GROUP = "tool-loop-open"

# The rules of the tools `actor` may use, by name (from the tools file and what the servers offer).
RulesFor = Callable[[Actor], Awaitable[Mapping[str, ToolRules]]]


def _evolve_envelope(state: LoopState, envelope: Envelope) -> LoopState:
    return evolve(state, envelope.payload)


class ToolLoop:
    """The `tools` role's orchestration half; `processors/tools/runner.py` executes the calls it requests.

    Every run event is folded into its run's state in log order; the loop decides only on what others
    did (a worker's proposal, the owner's approval, a runner's start and finish, a tick) and never on
    its own decisions when they come back, so a restart that re-reads them decides nothing twice.
    """

    def __init__(
        self,
        *,
        log: EventLog,
        codec: AvroCodec,
        rules_for: RulesFor,
        budget: LoopBudget = LoopBudget(),
        tick_s: float = 1.0,
        safety: SafetyStages | None = None,
    ) -> None:
        self._log = log
        self._codec = codec
        self._rules_for = rules_for
        self._budget = budget
        self._tick_s = tick_s
        self._safety = safety
        self._states = KeyedStates(log=log, codec=codec, topic=RUN_EVENTS, initial=LoopState(), evolve=_evolve_envelope)
        # Runs with calls still open, and whose they are: the ticker looks at these alone.
        self._open: dict[str, Actor] = {}
        # Per partition of run-events: the last offset `react` read, and the last one a tick marked.
        self._read_to: dict[int, int] = {}
        self._marked: dict[int, int] = {}

    def processor(self) -> Processor:
        return Processor(
            group=TOOL_LOOP_GROUP, topics=(RUN_EVENTS, CONVERSATION_EVENTS), react=self.react, on_reset=self._reset,
            # Deltas, heartbeats and manifests are nothing to the loop: skipped unread (and without an fsync each).
            reacts_to=frozenset(event.__name__ for event in (*_LOOP_EVENTS, RunCancellationRequested)),
        )

    def _reset(self) -> None:
        self._states.clear()
        self._open.clear()
        self._read_to.clear()  # the batch is read again: not behind us yet

    async def react(self, deliveries: Sequence[Delivery]) -> list[OutgoingRecord]:
        decided: list[Envelope] = []  # the loop's decisions, kept as objects until written
        finishes: list[OutgoingRecord] = []
        for delivery in deliveries:
            envelope = delivery.envelope
            event = envelope.payload
            if delivery.record.topic == CONVERSATION_EVENTS:
                if isinstance(event, RunCancellationRequested) and event.run_id in self._open:
                    ended, finish = await self._cancel(event.run_id, envelope)
                    decided.extend(ended)
                    finishes.append(finish)
                continue
            partition = delivery.record.partition
            self._read_to[partition] = max(self._read_to.get(partition, -1), delivery.record.offset)
            if not isinstance(event, _LOOP_EVENTS):
                continue  # deltas, heartbeats, manifests: nothing to the loop
            state = await self._states.get(envelope.key, before=delivery.record.offset)
            folded = self._states.apply(envelope.key, envelope)
            if _decided_by_others(event):
                wants_rules = isinstance(event, (ToolCallsProposed, ToolApprovalDecided))
                rules = await self._rules_for(envelope.actor) if wants_rules else {}
                if isinstance(event, ToolCallsProposed) and event.offered is not None:
                    # Only what the step was offered: the turn may have narrowed its tools.
                    rules = {name: rule for name, rule in rules.items() if name in event.offered}
                refused: dict[str, str] = {}
                if isinstance(event, ToolCallsProposed) and self._safety is not None:
                    with tracing.reacting_to(envelope):  # the checks are spans of this run's trace
                        refused, checked = await self._screened_calls(state, event, envelope, rules)
                    decided.extend(checked)
                decided.extend(self._decided(state, event, envelope, rules=rules, refused=refused))  # tracks the run
            else:
                self._track(folded, envelope.actor)
        next_steps = await self._next_steps(decided)
        return [*(encode(self._codec, e, topic=RUN_EVENTS) for e in decided), *finishes, *next_steps]

    def _decided(
        self, state: LoopState, event: object, cause: Envelope, *, rules: Mapping[str, ToolRules],
        refused: Mapping[str, str] | None = None,
    ) -> list[Envelope]:
        outcomes = decide(state, event, rules=rules, budget=self._budget, refused=refused or {})
        after = evolve(state, event)
        for outcome in outcomes:
            after = evolve(after, outcome)
        self._track(after, cause.actor)
        return [Envelope.wrap(outcome, key=outcome.run_id, actor=cause.actor, cause=cause) for outcome in outcomes]

    async def _screened_calls(
        self, state: LoopState, proposal: ToolCallsProposed, cause: Envelope, rules: Mapping[str, ToolRules]
    ) -> tuple[dict[str, str], list[Envelope]]:
        """The tool stage over a proposal's new calls to tools the run may use: the refused ones (with why), the decisions."""
        assert self._safety is not None
        fresh = [call for call in proposal.calls if call.call_id not in state.calls and call.name in rules]
        if not fresh or not self._safety.runs("tool", cause.actor.org_id):
            return {}, []
        subject = RunSubject(
            run_id=proposal.run_id, conversation_id=proposal.conversation_id, turn_seq=await self._turn_seq(proposal.run_id),
            org_id=cause.actor.org_id,
        )
        screenings = await asyncio.gather(
            *(self._safety.tool_call(call.arguments, call_id=call.call_id, subject=subject) for call in fresh)
        )
        refused = {call.call_id: s.refusal for call, s in zip(fresh, screenings) if s.refusal is not None}
        decisions = [
            Envelope.wrap(s.decision, key=proposal.run_id, actor=cause.actor, cause=cause) for s in screenings if s.decision is not None
        ]
        return refused, decisions

    async def _turn_seq(self, run_id: str) -> int:
        """The assistant turn a run answers (its `RunStarted`, first on its events); 0 if it is not there."""
        for record in await self._log.read(RUN_EVENTS, key=run_id, limit=16):
            envelope = self._decoded(record.value)
            if envelope is not None and isinstance(envelope.payload, RunStarted):
                return envelope.payload.turn_seq
        return 0

    def _track(self, state: LoopState, actor: Actor) -> None:
        if state.run_id is None:
            return
        if state.open_calls() and not state.cancelled:
            self._open[state.run_id] = actor
        else:
            self._open.pop(state.run_id, None)

    async def _cancel(self, run_id: str, cause: Envelope) -> tuple[list[Envelope], OutgoingRecord]:
        """A run cancelled while it waits on tools: its calls end, and (no worker holds it) the loop ends the run."""
        state = await self._states.get(run_id)
        ended = self._decided(state, RunCancelled(run_id=run_id, at=cause.occurred_at), cause, rules={})
        self._open.pop(run_id, None)
        after = fold([envelope.payload for envelope in ended], state)
        calls = tuple(
            ToolCallSummary(call_id=call.call_id, tool_name=call.tool_name, status=call.status, attempts=call.attempt)
            for call in after.calls.values()
        )
        finish = FinishRun(
            conversation_id=state.conversation_id, run_id=run_id, status="cancelled", text="",
            reason="cancelled by the user", usage=Usage(), sources=(), citations=(), tool_calls=calls,
        )
        envelope = Envelope.wrap(finish, key=finish.conversation_id, actor=cause.actor, cause=cause)
        return ended, encode(self._codec, envelope, topic=COMMANDS)

    async def _next_steps(self, decided: Sequence[Envelope]) -> list[OutgoingRecord]:
        """For each step completed in `decided`: the run's next model step, on the topic the step came from."""
        follow_ups = []
        for envelope in decided:
            if isinstance(envelope.payload, ToolStepCompleted):
                follow_ups.extend(await self._continue(envelope.payload, envelope, decided))
        return follow_ups

    async def _continue(
        self, completed: ToolStepCompleted, envelope: Envelope, pending: Sequence[Envelope]
    ) -> list[OutgoingRecord]:
        """The next step: the step's request, its proposal, and its calls' results (some maybe still in `pending`)."""
        logged = [self._codec.decode(r.value).payload for r in await self._log.read(RUN_EVENTS, key=completed.run_id)]
        events = logged + [decision.payload for decision in pending]
        proposal = next((e for e in events if isinstance(e, ToolCallsProposed) and e.step == completed.step), None)
        if proposal is None:
            logger.warning("run %s: step %d completed without its proposal on the log", completed.run_id, completed.step)
            return []
        requests = [self._codec.decode(r.value).payload for r in await self._log.read(proposal.topic, key=completed.run_id)]
        previous = next(
            (r for r in reversed(requests) if isinstance(r, InferenceRequested) and r.step == completed.step), None
        )
        if previous is None:
            logger.warning("run %s: no request of step %d on %s", completed.run_id, completed.step, proposal.topic)
            return []
        results: dict[str, CallResult] = {}
        for event in events:  # the first finish of each call is its result, as the loop folds it
            if isinstance(event, ToolCallFinished) and event.step == completed.step:
                results.setdefault(event.call_id, (event.status, event.result, event.sources))
        with tracing.reacting_to(envelope):
            screening = await self._screened_results(results, proposal, previous, envelope)
        request = next_step(
            previous, proposal, results, final=completed.final, reason=completed.reason, fenced=screening.fenced,
            dropped=screening.dropped,
        )
        request_envelope = Envelope.wrap(request, key=request.run_id, actor=envelope.actor, cause=envelope)
        decisions = [
            encode(self._codec, Envelope.wrap(decision, key=request.run_id, actor=envelope.actor, cause=envelope), topic=RUN_EVENTS)
            for decision in screening.decisions
        ]
        return [*decisions, encode(self._codec, request_envelope, topic=proposal.topic)]

    async def _screened_results(
        self, results: Mapping[str, CallResult], proposal: ToolCallsProposed, previous: InferenceRequested, cause: Envelope
    ) -> ContextScreening:
        """The context stage over a step's results, in the order proposed: each passage a result holds (by chunk id),
        else its text (by call id)."""
        if self._safety is None:
            return ContextScreening()
        subjects: list[tuple[str, str]] = []
        for call_id in (call.call_id for call in proposal.calls if call.call_id in results):
            status, result, found = results[call_id]
            if status == "completed" and found:
                subjects.extend((source.chunk_id, source.text) for source in found)
            elif result.strip():
                subjects.append((call_id, result))
        subject = RunSubject(
            run_id=previous.run_id, conversation_id=previous.conversation_id, turn_seq=previous.turn_seq,
            org_id=cause.actor.org_id,
        )
        return await self._safety.context(list(dict(subjects).items()), subject=subject)

    async def tick(self, now: datetime | None = None) -> None:
        """A tick on the log for every run with open calls (decided in order by `react`), and its lease renewed.

        With them goes the mark `recover` starts from: what `react` has read. Every open run it knows of
        gets a tick after the mark in the same append, and runs that open later have their events after it.
        """
        at = now or utc_now()
        records = []
        for run_id, actor in list(self._open.items()):
            for event in (ToolLoopTicked(run_id=run_id, now=at), RunHeartbeat(run_id=run_id, worker_id=TOOL_LOOP_GROUP)):
                records.append(encode(self._codec, Envelope.wrap(event, key=run_id, actor=actor), topic=RUN_EVENTS))
        marks = {partition: offset for partition, offset in self._read_to.items() if self._marked.get(partition) != offset}
        commit = ConsumerCommit(
            group=TOOL_LOOP_OPEN_GROUP,
            offsets={TopicPartition(topic=RUN_EVENTS, partition=partition): offset for partition, offset in marks.items()},
        )
        if records:
            await self._log.append(records, durable=False, commit=commit if marks else None)
        elif marks:
            await self._log.commit(commit)
        self._marked.update(marks)

    async def recover(self) -> None:
        """Track again the runs an earlier loop left with open calls, so their ticks (and leases) go on.

        They have an event after the last mark a tick committed; each one found there is folded from its
        own events and tracked if it still has open calls and has not finished (the watchdog may have
        ended it meanwhile). Without a mark (never ticked) the whole of `run-events` is read, once.
        """
        after = min((await self._log.committed_offsets(group=TOOL_LOOP_OPEN_GROUP, topic=RUN_EVENTS)).values(), default=-1)
        pending = {partition: end for partition, end in (await self._log.end_offsets(RUN_EVENTS)).items() if end > after}
        candidates: dict[str, Actor] = {}
        stream = self._log.follow(RUN_EVENTS, after=after)
        try:
            while pending:  # up to each partition's end when this started: what comes later, `react` sees
                record = await anext(stream)
                if record.offset >= pending.get(record.partition, record.offset + 1):
                    del pending[record.partition]
                envelope = self._decoded(record.value)
                if envelope is not None and isinstance(envelope.payload, _LOOP_EVENTS):
                    candidates[record.key] = envelope.actor
        finally:
            await stream.aclose()
        taken_back = 0
        for run_id, actor in candidates.items():
            if run_id in self._open:
                continue
            events = [envelope.payload for r in await self._log.read(RUN_EVENTS, key=run_id) if (envelope := self._decoded(r.value))]
            if not any(isinstance(event, RunFinished) for event in events):
                self._track(fold(events), actor)
                taken_back += run_id in self._open
        if taken_back:
            logger.warning("tool loop: took back %d run(s) an earlier process left with open calls", taken_back)

    def _decoded(self, value: bytes) -> Envelope | None:
        try:
            return self._codec.decode(value)
        except UndecodableMessage:
            return None  # dead-lettered by whoever consumes it

    async def run_ticks(self) -> None:
        """Tick every `tick_s` until cancelled; meanwhile, take back the runs an earlier process left open."""
        recovering = asyncio.create_task(self._recover_once(), name="tool-loop-recovery")
        try:
            while True:
                await asyncio.sleep(self._tick_s)
                try:
                    await self.tick()
                except Exception:
                    logger.exception("tool loop tick failed; trying again")
        finally:
            recovering.cancel()
            await asyncio.gather(recovering, return_exceptions=True)

    async def _recover_once(self) -> None:
        try:
            await self.recover()
        except Exception:  # the ticks go on for the runs `react` tracks; those left open lapse as before
            logger.exception("tool loop: could not look for runs an earlier process left open")


_LOOP_EVENTS = (
    ToolCallsProposed, ToolCallRequested, ToolApprovalRequested, ToolApprovalDecided, ToolCallStarted, ToolCallFinished,
    ToolStepCompleted, ToolLoopTicked, RunBackgrounded,
)


def _decided_by_others(event: object) -> bool:
    """Whether the loop decides on `event`; its own decisions (a finish with no runner, a timed-out approval) it only folds."""
    match event:
        case ToolCallsProposed() | ToolCallStarted() | ToolLoopTicked():
            return True
        case ToolCallFinished():
            return bool(event.runner_id)
        case ToolApprovalDecided():
            return event.decided_by != "timeout"
    return False
