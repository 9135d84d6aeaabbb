"""The kernel's metrics: the exposition, the consumer-lag sampler on a real log, dead letters and appends counted."""

import asyncio
import time

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from kernel.codec import AvroCodec
from kernel.log import ConsumerCommit, LogRecord, OutgoingRecord
from kernel.metrics import exposition, sample_consumer_lag
from kernel.runtime import dead_letter


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_exposition_is_prometheus_text_with_the_kernels_metrics() -> None:
    body, media_type = exposition()
    assert media_type.startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {
        "turnlog_log_append_duration_seconds", "turnlog_consumer_lag_records", "turnlog_dead_letters",
        "turnlog_processor_batch_duration_seconds", "turnlog_role_up",
    } <= names
    assert "_created" not in body.decode(), "no _created series: they double a scrape for nothing"


async def test_the_lag_sampler_sets_each_groups_lag_on_a_real_log(embedded_log) -> None:
    written = await embedded_log.append([OutgoingRecord(topic="lagging", key="k", value=b"%d" % n) for n in range(5)])
    await embedded_log.commit(ConsumerCommit.through("slow-group", written[:2]))
    sampler = asyncio.create_task(sample_consumer_lag(embedded_log, {"slow-group": ("lagging",)}, every_s=0.01))
    try:
        deadline = time.monotonic() + 30
        while sample("turnlog_consumer_lag_records", group="slow-group", topic="lagging") != 3:
            assert time.monotonic() < deadline, "the lag was never sampled"
            await asyncio.sleep(0.01)
        await embedded_log.commit(ConsumerCommit.through("slow-group", written))
        while sample("turnlog_consumer_lag_records", group="slow-group", topic="lagging") != 0:
            assert time.monotonic() < deadline, "the lag did not follow the commit"
            await asyncio.sleep(0.01)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)


async def test_appends_are_timed_by_log_and_durability(embedded_log) -> None:
    before = sample("turnlog_log_append_duration_seconds_count", log="embedded", durable="false")
    await embedded_log.append([OutgoingRecord(topic="t", key="k", value=b"v")], durable=False)
    assert sample("turnlog_log_append_duration_seconds_count", log="embedded", durable="false") == before + 1


def test_each_dead_letter_is_counted_by_group_and_topic() -> None:
    from datetime import UTC, datetime

    record = LogRecord(topic="poisoned", partition=0, offset=7, key="k", value=b"junk", timestamp=datetime.now(UTC))
    before = sample("turnlog_dead_letters_total", group="some-group", topic="poisoned")
    dead_letter(_codec(), group="some-group", record=record, reason="bad")
    assert sample("turnlog_dead_letters_total", group="some-group", topic="poisoned") == before + 1


def _codec() -> AvroCodec:
    from turnlog.adapters import build_codec

    return build_codec()
