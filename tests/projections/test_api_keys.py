"""The API key view: keys folded per id (the first creation wins, a revocation needs the key's org), loaded at start,
followed afterwards, and refused as stale (503) when it cannot confirm it is current."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from commands.catalog import COMMAND_TYPES
from events.api_keys import ApiKeyCreated, ApiKeyRevoked
from events.catalog import EVENT_TYPES
from events.embedded import EmbeddedLog
from events.topics import API_KEYS, key_of, topic_of
from events.topology import turnlog_topics
from kernel.codec import AvroCodec
from kernel.envelope import Actor, Envelope
from kernel.errors import Unavailable
from kernel.log import OutgoingRecord
from projections.api_keys import ApiKeyView, evolve, fold

CODEC = AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))
T0 = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
OPERATOR = Actor(user_id="op", org_id="org_a", workspace_id="")


def created(key_id: str = "0123456789abcdef", *, org_id: str = "org_a", user_id: str = "ana", **fields) -> ApiKeyCreated:
    return ApiKeyCreated(
        key_id=key_id, secret_sha256="ab" * 32, org_id=org_id, user_id=user_id, workspace_ids=("ws_1", "ws_2"),
        created_by="op", created_at=T0, **fields,
    )


def revoked(key_id: str = "0123456789abcdef", *, org_id: str = "org_a") -> ApiKeyRevoked:
    return ApiKeyRevoked(key_id=key_id, org_id=org_id, revoked_by="op", reason="leaked", revoked_at=T0 + timedelta(hours=1))


async def write(log: EmbeddedLog, *events: object) -> int:
    records = await log.append([
        OutgoingRecord(topic=API_KEYS, key=event.key_id, value=CODEC.encode(Envelope.wrap(event, key=event.key_id, actor=OPERATOR)))
        for event in events
    ])
    return records[-1].offset


def test_key_events_live_on_their_own_single_partition_topic_keyed_by_key_id() -> None:
    assert (topic_of(created()), key_of(created()), topic_of(revoked()), key_of(revoked())) == (
        API_KEYS, "0123456789abcdef", API_KEYS, "0123456789abcdef",
    )
    spec = turnlog_topics().spec_for(API_KEYS)
    assert (spec.partitions, spec.retention) == (1, None)


def test_given_a_created_key_when_it_is_revoked_then_it_is_revoked_and_stays_so() -> None:
    key = evolve(None, created())
    assert key is not None and key.status(T0) == "active" and key.workspace_ids == ("ws_1", "ws_2")
    gone = evolve(key, revoked())
    assert gone is not None and gone.status(T0) == "revoked" and (gone.revoked_by, gone.revoked_reason) == ("op", "leaked")
    assert evolve(gone, revoked()) == gone  # revoking again changes nothing


def test_the_first_creation_of_a_key_id_wins_and_another_orgs_revocation_is_ignored() -> None:
    keys = fold([created(user_id="ana"), created(user_id="mallory", org_id="org_b"), revoked(org_id="org_b")])
    assert keys["0123456789abcdef"].user_id == "ana"
    assert keys["0123456789abcdef"].status(T0) == "active"
    assert fold([revoked()]) == {}  # a revocation of a key never created creates nothing


def test_an_expired_key_is_expired_from_its_expiry_on() -> None:
    key = evolve(None, created(expires_at=T0 + timedelta(days=1)))
    assert key is not None
    assert key.status(T0 + timedelta(hours=23)) == "active"
    assert key.status(T0 + timedelta(days=1)) == "expired"


def test_the_key_events_roundtrip_through_the_codec() -> None:
    for event in (created(expires_at=T0 + timedelta(days=30)), created(), revoked()):
        envelope = Envelope.wrap(event, key=event.key_id, actor=OPERATOR)
        assert CODEC.decode(CODEC.encode(envelope)) == envelope


async def test_the_view_loads_what_is_on_the_log_then_follows_new_events(embedded_log: EmbeddedLog) -> None:
    await write(embedded_log, created("aaaaaaaaaaaaaaaa"), created("bbbbbbbbbbbbbbbb", org_id="org_b"))
    view = ApiKeyView(log=embedded_log, codec=CODEC)
    await view.start()
    try:
        assert [key.key_id for key in view.of_org("org_a")] == ["aaaaaaaaaaaaaaaa"]
        view.check_fresh()
        offset = await write(embedded_log, revoked("aaaaaaaaaaaaaaaa"))
        await view.wait_until_applied(offset, timeout_s=5)
        key = view.get("aaaaaaaaaaaaaaaa")
        assert key is not None and key.revoked_at is not None
    finally:
        await view.close()


async def test_a_view_that_cannot_confirm_it_is_current_refuses_keys(embedded_log: EmbeddedLog) -> None:
    view = ApiKeyView(log=embedded_log, codec=CODEC, max_staleness_s=0.2, confirm_every_s=30)
    await view.start()
    try:
        view.check_fresh()  # confirmed at start
        deadline = asyncio.get_running_loop().time() + 5
        while True:  # no confirmation for 30 s: past 0.2 s the view is stale
            try:
                view.check_fresh()
            except Unavailable as error:
                assert error.retry_after_s == 1
                break
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    finally:
        await view.close()
    with pytest.raises(Unavailable):
        view.check_fresh()  # a closed view follows nothing


async def test_catch_up_waits_for_a_key_appended_elsewhere(embedded_log: EmbeddedLog) -> None:
    view = ApiKeyView(log=embedded_log, codec=CODEC)
    await view.start()
    try:
        await write(embedded_log, created("cccccccccccccccc"))
        await view.catch_up(timeout_s=5)
        assert view.get("cccccccccccccccc") is not None
    finally:
        await view.close()
