"""Properties of the governance decider over random interleavings of admissions, ends, redeliveries and grants.

Whatever the order: a wallet never goes below zero by more than one run's reservation, no limit on runs in
progress is exceeded, each admitted run is charged at most once and the charges equal the usage ledger, and
a decider restarted from the history (read back through the codec, as a replay reads it), or from a snapshot of its
state as the store keeps it, decides the same.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from commands.governance.decider import OrgState, decide, fold
from commands.governance.snapshots import OrgSnapshot, snapshot_from_json
from kernel.snapshots import snapshot_json
from commands.governance.quota import cost_of
from commands.governance.tiers_file import AbusePolicy, AdmissionPolicy, GovernanceConfig, Limits, Price, Tier
from events.catalog import EVENT_TYPES
from events.governance import (
    AdmissionDecided,
    AdmissionRequested,
    AdmissionWithdrawn,
    CreditsGrantRequested,
    RunCharged,
    RunSettlementRequested,
    ViolationReported,
)
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope

ORG = "org_prop"
USERS = ("user_a", "user_b", "user_c")
T0 = datetime(2026, 5, 31, 23, 0, tzinfo=UTC)  # an hour before a month ends
RESERVATION = 10
PRICES = {"small": Price(prompt=1, cached=0, output=2), "large": Price(prompt=2, cached=1, output=2)}
# The most a run can cost here: 4000 prompt tokens at 2 + 3000 output tokens at 2 per 1000 = 14 ... kept within
# the reservation by the token ranges below (prompt <= 2000 on "large": 4 + 6 = 10).
PROMPT_MAX, OUTPUT_MAX = 2000, 3000
CODEC = AvroCodec(payload_types=EVENT_TYPES)


def config_with(start_balance: int) -> GovernanceConfig:
    tier = Tier(
        name="free", start_balance=start_balance, monthly_refill=start_balance // 2, reservation_units=RESERVATION,
        user=Limits(requests_per_minute=2, tokens_per_minute=8000, concurrent_runs=3), org=Limits(concurrent_runs=4),
    )
    return GovernanceConfig(
        tiers={"free": tier}, prices=PRICES, abuse=AbusePolicy(threshold=12, half_life_s=120, suspension_s=300),
        admission=AdmissionPolicy(reservation_ttl_s=3 * 3600),
    )


@dataclass(frozen=True)
class Admit:
    user: int
    tokens: int
    step: timedelta


@dataclass(frozen=True)
class End:
    pick: int  # which admission (wraps): a run that ended already is a redelivery
    pool: str
    prompt: int
    cached: int
    output: int
    status: str
    step: timedelta


@dataclass(frozen=True)
class Withdraw:
    pick: int
    step: timedelta


@dataclass(frozen=True)
class Grant:
    units: int
    user: int | None
    step: timedelta


@dataclass(frozen=True)
class Report:
    user: int
    kind: str
    step: timedelta


@dataclass(frozen=True)
class Redeliver:
    """An earlier request envelope again, byte for byte: a run's end, a withdrawal, a grant, a report.

    Not an admission: the API appends each once, with a fresh run id (a retry is a new run), and its
    append is the transactional one. A redelivered admission is answered once while its run is in
    progress; after the run's end it would be decided again (see docs/governance.md).
    """

    pick: int


# Mostly moments apart (rates and runs in progress collide), sometimes hours (reservations lapse) or days (months turn).
STEPS = (timedelta(0),) * 6 + (timedelta(milliseconds=300),) * 3 + (timedelta(seconds=2),) * 3 + (
    timedelta(seconds=20), timedelta(minutes=2), timedelta(hours=1), timedelta(hours=4), timedelta(days=9),
)
_step = st.sampled_from(STEPS)
_user = st.sampled_from([0, 0, 0, 1, 2])  # mostly one busy user, so their limits are reached
_admit = st.builds(Admit, user=_user, tokens=st.one_of(st.just(0), st.integers(min_value=0, max_value=3000)), step=_step)
_end = st.builds(
    End, pick=st.one_of(st.just(-1), st.integers(min_value=0, max_value=40)), pool=st.sampled_from(["small", "large"]),
    prompt=st.integers(min_value=0, max_value=PROMPT_MAX), cached=st.integers(min_value=0, max_value=PROMPT_MAX),
    output=st.integers(min_value=0, max_value=OUTPUT_MAX), status=st.sampled_from(["completed", "cancelled", "failed"]),
    step=_step,
)
PROGRAM = st.lists(
    st.one_of(
        _admit, _admit, _admit, _end, _end, _end,
        st.builds(Withdraw, pick=st.integers(min_value=0, max_value=40), step=_step),
        st.builds(Grant, units=st.integers(min_value=1, max_value=40), user=st.one_of(st.none(), _user), step=_step),
        st.builds(Report, user=_user, kind=st.sampled_from(["flagged_input", "sandbox_escape", "other"]), step=_step),
        st.builds(Redeliver, pick=st.integers(min_value=0, max_value=60)),
    ),
    min_size=5,
    max_size=80,
)


@dataclass
class Run:
    """The decider's answers and what an observer of the log can check them against."""

    requests: list[Envelope]
    events: list[object]
    decisions: list[tuple[object, ...]]
    states: list[OrgState]


def requests_of(program: list, *, start_balance: int) -> list[Envelope]:
    """The requests the API, the router and operators append, in log order (an envelope's clock may lag: 0 steps)."""
    now, run_ids, envelopes = T0, [], []
    for index, step in enumerate(program):
        if isinstance(step, Redeliver):
            again = [envelope for envelope in envelopes if not isinstance(envelope.payload, AdmissionRequested)]
            if again:
                envelopes.append(again[step.pick % len(again)])
            continue
        now += step.step
        user = USERS[getattr(step, "user", 0) or 0]
        match step:
            case Admit():
                run_ids.append((f"run_{index}", user))
                payload: object = AdmissionRequested(org_id=ORG, user_id=user, run_id=f"run_{index}", estimated_tokens=step.tokens)
            case End():
                if not run_ids:
                    continue
                run_id, user = run_ids[step.pick % len(run_ids)]
                payload = RunSettlementRequested(
                    org_id=ORG, user_id=user, run_id=run_id, status=step.status, pool=step.pool, prompt_tokens=step.prompt,
                    cached_tokens=min(step.cached, step.prompt), output_tokens=step.output,
                )
            case Withdraw():
                if not run_ids:
                    continue
                run_id, user = run_ids[step.pick % len(run_ids)]
                payload = AdmissionWithdrawn(org_id=ORG, user_id=user, run_id=run_id, reason="turn refused")
            case Grant():
                payload = CreditsGrantRequested(
                    org_id=ORG, user_id=None if step.user is None else USERS[step.user], units=step.units, reason="top-up", by="op"
                )
            case Report():
                payload = ViolationReported(org_id=ORG, user_id=user, kind=step.kind, by="sandbox")
        envelopes.append(Envelope.wrap(payload, key=ORG, actor=Actor(user_id=user, org_id=ORG, workspace_id="ws"), occurred_at=now))
    return envelopes


def play(requests: list[Envelope], config: GovernanceConfig, state: OrgState | None = None) -> Run:
    state = state or OrgState()
    played = Run(requests=requests, events=[], decisions=[], states=[])
    for request in requests:
        decision = decide(request, state, config)
        state = fold(state, decision.events)
        played.decisions.append(decision.events)
        played.events.extend(decision.events)
        played.states.append(state)
    return played


# From none (every admission refused for credits) to plenty (the limits bind instead).
BALANCES = st.sampled_from([1000, 60, 15, 5, 0])
PROPERTY_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(program=PROGRAM, start_balance=BALANCES)
def test_a_wallet_never_goes_below_zero_by_more_than_one_reservation(program: list, start_balance: int) -> None:
    played = play(requests_of(program, start_balance=start_balance), config_with(start_balance))
    for state in played.states:
        assert state.balance >= -RESERVATION
        for balance in state.user_balances.values():
            assert balance >= -RESERVATION


@PROPERTY_SETTINGS
@given(program=PROGRAM, start_balance=BALANCES)
def test_runs_in_progress_never_exceed_their_limits(program: list, start_balance: int) -> None:
    config = config_with(start_balance)
    tier = config.tier_of(ORG)
    for state in play(requests_of(program, start_balance=start_balance), config).states:
        assert state.running() <= (tier.org.concurrent_runs or 0)
        for user in USERS:
            assert state.running(user) <= (tier.user.concurrent_runs or 0)


def event_is_its_end(event: object, request: RunSettlementRequested) -> bool:
    return isinstance(event, RunCharged) and event.run_id == request.run_id and event.status == request.status


@PROPERTY_SETTINGS
@given(program=PROGRAM, start_balance=BALANCES)
def test_each_admitted_run_is_charged_once_and_the_charges_equal_the_ledger(program: list, start_balance: int) -> None:
    config = config_with(start_balance)
    played = play(requests_of(program, start_balance=start_balance), config)
    admitted = {e.run_id for e in played.events if isinstance(e, AdmissionDecided) and e.admitted}
    charges = [e for e in played.events if isinstance(e, RunCharged)]
    assert len({charge.run_id for charge in charges}) == len(charges)  # at most one per run, whatever was redelivered
    assert {charge.run_id for charge in charges} <= admitted
    # The ledger: one row per run that was settled while admitted, its final usage (redeliveries carry the same).
    ledger: dict[str, RunSettlementRequested] = {}
    for request, answered in zip(played.requests, played.decisions):
        for event in answered:
            settled = isinstance(request.payload, RunSettlementRequested) and event_is_its_end(event, request.payload)
            if settled:
                ledger[event.run_id] = request.payload
    priced = sum(
        cost_of(config.price_of(row.pool), prompt_tokens=row.prompt_tokens, cached_tokens=row.cached_tokens,
                output_tokens=row.output_tokens)
        for row in ledger.values()
    )
    assert sum(charge.units for charge in charges) == priced
    final = played.states[-1] if played.states else OrgState()
    assert set(final.reservations) == admitted - {charge.run_id for charge in charges}


@PROPERTY_SETTINGS
@given(program=PROGRAM, start_balance=BALANCES, cut=st.integers(min_value=0, max_value=60))
def test_a_decider_restarted_from_the_replayed_history_decides_the_same(program: list, start_balance: int, cut: int) -> None:
    config = config_with(start_balance)
    requests = requests_of(program, start_balance=start_balance)
    live = play(requests, config)
    assert play(requests, config).decisions == live.decisions  # the same log, the same answers
    cut = min(cut, len(requests))
    history = [event for answered in live.decisions[:cut] for event in answered]
    # A restart folds the history as the log holds it: encoded, then decoded.
    rebuilt = fold(OrgState(), (CODEC.decode_payload(CODEC.encode_payload(event)) for event in history))
    assert rebuilt == (live.states[cut - 1] if cut else OrgState())
    assert play(requests[cut:], config, state=rebuilt).decisions == live.decisions[cut:]


@PROPERTY_SETTINGS
@given(program=PROGRAM, start_balance=BALANCES, cut=st.integers(min_value=1, max_value=60))
def test_a_decider_restarted_from_a_stored_snapshot_decides_the_same(program: list, start_balance: int, cut: int) -> None:
    config = config_with(start_balance)
    requests = requests_of(program, start_balance=start_balance)
    assume(requests)
    live = play(requests, config)
    cut = min(cut, len(requests))
    state = live.states[cut - 1]
    restored = snapshot_from_json(snapshot_json(OrgSnapshot(state=state, through=cut))).state
    assert restored == state
    assert play(requests[cut:], config, state=restored).decisions == live.decisions[cut:]


@PROPERTY_SETTINGS
@given(program=PROGRAM, start_balance=BALANCES)
def test_a_refusal_changes_nothing_but_the_score(program: list, start_balance: int) -> None:
    played = play(requests_of(program, start_balance=start_balance), config_with(start_balance))
    before = OrgState()
    for answered, after in zip(played.decisions, played.states):
        refusals = [e for e in answered if isinstance(e, AdmissionDecided) and not e.admitted]
        if refusals and len(answered) == len(refusals) + sum(1 for e in answered if type(e).__name__ in ("ViolationRecorded", "UserSuspended")):
            assert (after.balance, after.user_balances, after.reservations) == (before.balance, before.user_balances, before.reservations)
            assert {k: v for k, v in after.windows.items() if v > after.clock} == {
                k: v for k, v in before.windows.items() if v > after.clock
            }
        before = after
