"""Topic specifications: how many partitions each topic has, how long it keeps records, and how it is cleaned.

The Kafka adapter provisions topics from these when it starts (and when it first meets a topic of a
prefixed family such as `inference-requests.<pool>`). Existing topics are left as they are.
A key's partition is `murmur2(key) % partitions`, so a topic's partition count is part of its
identity: growing it later moves keys to other partitions and breaks per-key order across the change.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Literal

from events.topics import (
    API_KEYS,
    COMMAND_OUTCOMES,
    COMMANDS,
    CONVERSATION_EVENTS,
    DOCUMENTS,
    GOVERNANCE,
    GOVERNANCE_REQUESTS,
    INFERENCE_REQUESTS_PREFIX,
    RUN_EVENTS,
    SUMMARIES,
    USAGE,
)
from events.retention import DEFAULT_RUN_EVENTS_RETENTION
from kernel.dead_letters import DEAD_LETTERS

CleanupPolicy = Literal["delete", "compact", "compact,delete"]


class UnknownTopic(LookupError):
    """A topic that no specification covers (a typo, or a topic that was never declared)."""


@dataclass(frozen=True, kw_only=True)
class TopicSpec:
    """One topic's shape: partitions, retention (None: kept forever) and cleanup policy."""

    partitions: int
    retention: timedelta | None
    cleanup_policy: CleanupPolicy = "delete"
    replication_factor: int = -1  # -1: the broker's default
    min_insync_replicas: int | None = None  # with acks=all, how many replicas must have a record
    extra_config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"a topic needs at least one partition, not {self.partitions}")

    def topic_config(self) -> dict[str, str]:
        """The Kafka topic configuration entries for this spec."""
        retention_ms = -1 if self.retention is None else int(self.retention.total_seconds() * 1000)
        config = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(retention_ms)}
        if self.min_insync_replicas is not None:
            config["min.insync.replicas"] = str(self.min_insync_replicas)
        return {**config, **self.extra_config}


@dataclass(frozen=True, kw_only=True)
class TopicSpecs:
    """Specs by exact topic name, then by name prefix; `default` (if any) covers every other topic."""

    named: Mapping[str, TopicSpec]
    prefixed: Mapping[str, TopicSpec] = field(default_factory=dict)
    default: TopicSpec | None = None

    def spec_for(self, topic: str) -> TopicSpec:
        if topic in self.named:
            return self.named[topic]
        matches = [prefix for prefix in self.prefixed if topic.startswith(prefix)]
        if matches:
            return self.prefixed[max(matches, key=len)]
        if self.default is not None:
            return self.default
        raise UnknownTopic(f"no topic specification covers {topic!r}")


def turnlog_topics(
    *,
    partitions: int = 12,
    replication_factor: int = -1,
    min_insync_replicas: int | None = None,
    run_events_retention: timedelta | None = DEFAULT_RUN_EVENTS_RETENTION,
) -> TopicSpecs:
    """turnlog's topics: the conversation history and the files kept forever, streams and replies kept briefly.

    `run_events_retention` is the period the embedded log trims run events after (`--run-events-retention-s`).
    """

    def spec(retention: timedelta | None, *, count: int = partitions) -> TopicSpec:
        return TopicSpec(
            partitions=count,
            retention=retention,
            replication_factor=replication_factor,
            min_insync_replicas=min_insync_replicas,
        )

    return TopicSpecs(
        named={
            COMMANDS: spec(timedelta(days=7)),
            # The durable history: every conversation rebuilds from it, so nothing is ever deleted.
            CONVERSATION_EVENTS: spec(None),
            # Files and their ingestion: the only record of which files exist (the search index is
            # rebuilt from it), so it is kept forever too.
            DOCUMENTS: spec(None),
            # Token deltas and tool status: high volume, replayable only while a run is fresh. Kafka deletes
            # whole segments, every type alike, so here a run's other facts go with its deltas after the period
            # (the embedded log keeps them: events/retention.py). What outlives it: the durable turn on
            # `conversation-events`, the usage record, and the ledgers, which refold in place (ledger_replay.py).
            RUN_EVENTS: spec(run_events_retention),
            # Replies to commands; a client waits seconds for one, an hour is generous.
            COMMAND_OUTCOMES: spec(timedelta(hours=1)),
            DEAD_LETTERS: spec(timedelta(days=30), count=1),
            # What each run consumed: the billing record, kept forever (the ledger rebuilds from it).
            USAGE: spec(None),
            # What is asked of an org's governance; its answers are facts on `governance`, so a week is plenty.
            GOVERNANCE_REQUESTS: spec(timedelta(days=7)),
            # Each org's credits, charges, limits and suspensions: the ledger of credits, kept forever.
            GOVERNANCE: spec(None),
            # API keys (hashed) and their revocations: every API instance folds the whole topic, so one partition
            # orders it and its end offset is one number; kept forever, because a key lives until it is revoked.
            API_KEYS: spec(None, count=1),
            # Rolling summaries: derived, and only the newest per conversation matters.
            SUMMARIES: replace(spec(None), cleanup_policy="compact"),
        },
        # A request older than a day has no one waiting for its answer.
        prefixed={INFERENCE_REQUESTS_PREFIX: spec(timedelta(days=1))},
    )


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2`: the 32-bit MurmurHash2 (seed 0x9747b28c) as a signed Java int."""
    mask = 0xFFFFFFFF
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for index in range(0, length - length % 4, 4):
        k = int.from_bytes(data[index : index + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = length & ~3
    remainder = length % 4
    if remainder == 3:
        h ^= data[tail + 2] << 16
    if remainder >= 2:
        h ^= data[tail + 1] << 8
    if remainder >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str, partitions: int) -> int:
    """The partition of `key`, exactly as the Java producer and librdkafka's `murmur2_random` choose it."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
