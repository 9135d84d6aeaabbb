"""Looking a resource up on the log: patient for an id minted a moment ago, one read for an old one."""

from datetime import timedelta
from types import SimpleNamespace

from ulid import ULID

from api.access import read_patiently
from events.embedded import EmbeddedLog
from events.topics import RUN_EVENTS
from kernel.envelope import utc_now
from kernel.log import OutgoingRecord


class CountingReads:
    """The real log, counting reads (on Kafka each one is a scan of the key's partition)."""

    def __init__(self, log: EmbeddedLog) -> None:
        self.log = log
        self.reads = 0

    async def read(self, topic: str, **options):
        self.reads += 1
        return await self.log.read(topic, **options)


async def test_an_unknown_id_minted_long_ago_is_one_read(embedded_log: EmbeddedLog) -> None:
    log = CountingReads(embedded_log)
    old_id = f"run_{ULID.from_datetime(utc_now() - timedelta(hours=1))}"
    assert await read_patiently(SimpleNamespace(log=log), RUN_EVENTS, key=old_id) == []
    assert log.reads == 1


async def test_a_fresh_unknown_id_is_looked_for_again_and_a_known_one_found_at_once(embedded_log: EmbeddedLog) -> None:
    log = CountingReads(embedded_log)
    fresh_id = f"run_{ULID()}"
    assert await read_patiently(SimpleNamespace(log=log), RUN_EVENTS, key=fresh_id) == []
    assert log.reads > 1  # another instance may have created it a moment ago
    await embedded_log.append([OutgoingRecord(topic=RUN_EVENTS, key=fresh_id, value=b"started")])
    log.reads = 0
    assert len(await read_patiently(SimpleNamespace(log=log), RUN_EVENTS, key=fresh_id)) == 1
    assert log.reads == 1
