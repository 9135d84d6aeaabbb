"""`turnlog reseal`: plaintext content events from before sealing are sealed in place, and read back the same."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from events.conversation import ConversationCreated, ConversationRenamed
from events.embedded import EmbeddedLog
from events.key_files import KeyFileStore
from events.topics import CONVERSATION_EVENTS
from kernel.envelope import Actor, Envelope
from kernel.log import OutgoingRecord
from kernel.runtime import encode
from kernel.sealing import Erased, Subject
from turnlog.adapters import build_codec

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 5, tzinfo=UTC)
ADA = Actor(user_id="ada", org_id="org_acme", workspace_id="ws_1")
BOB = Actor(user_id="bob", org_id="org_acme", workspace_id="ws_1")
SYSTEM = Actor(user_id="", org_id="", workspace_id="")


def raw_bytes(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("log.db*")) if path.is_file())


def values(data_dir: Path) -> list[bytes]:
    with closing(sqlite3.connect(f"file:{data_dir / 'log.db'}?mode=ro", uri=True)) as log:
        return [bytes(value) for (value,) in log.execute("SELECT value FROM records ORDER BY log_offset")]


def reseal(data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "turnlog.cli", "reseal", "--data-dir", str(data_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


async def written_before_sealing(data_dir: Path) -> list[Envelope]:
    """Content events as a turnlog without sealing wrote them: plaintext payloads."""
    plain = build_codec()
    envelopes = [
        Envelope.wrap(ConversationCreated(conversation_id="c_ada", workspace_id="ws_1", owner_id="ada",
                                          title="ada's harbour gate notes", created_at=NOW), key="c_ada", actor=ADA),
        Envelope.wrap(ConversationCreated(conversation_id="c_bob", workspace_id="ws_1", owner_id="bob",
                                          title="bob's lantern schedule", created_at=NOW), key="c_bob", actor=BOB),
        Envelope.wrap(ConversationRenamed(conversation_id="c_ada", title="ada's tide tables", created_at=NOW, renamed_at=NOW),
                      key="c_ada", actor=ADA),
    ]
    log = EmbeddedLog(path=data_dir / "log.db")
    await log.start()
    try:
        await log.append([encode(plain, envelope, topic=CONVERSATION_EVENTS) for envelope in envelopes])
        await log.append([OutgoingRecord(topic=CONVERSATION_EVENTS, key="junk", value=b"not an envelope")])
    finally:
        await log.close()
    return envelopes


async def test_reseal_seals_plaintext_content_in_place_and_reads_back_the_same(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    envelopes = await written_before_sealing(data_dir)
    assert b"harbour gate" in raw_bytes(data_dir) and b"lantern schedule" in raw_bytes(data_dir)
    KeyFileStore(root=data_dir / "keys").destroy(Subject(org_id="org_acme", user_id="bob"))  # erased before the reseal

    done = reseal(data_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"resealed": 3}'

    # The old bytes are gone from the file and its WAL, not only superseded.
    on_disk = raw_bytes(data_dir)
    for words in (b"harbour gate", b"tide tables", b"lantern schedule"):
        assert words not in on_disk
    codec = build_codec(KeyFileStore(root=data_dir / "keys"))
    stored = values(data_dir)
    decoded = [codec.decode(value) for value in stored[:3]]
    assert [envelope.payload for envelope in decoded] == [envelopes[0].payload, Erased(type="ConversationCreated", key_id="user/org_acme/bob"), envelopes[2].payload]
    assert [(envelope.event_id, envelope.key, envelope.actor) for envelope in decoded] == [
        (envelope.event_id, envelope.key, envelope.actor) for envelope in envelopes
    ]
    assert stored[3] == b"not an envelope"  # junk is left as it was

    again = reseal(data_dir)
    assert again.returncode == 0 and again.stdout.strip() == '{"resealed": 0}'
    assert values(data_dir) == stored


async def test_reseal_refuses_a_kafka_log_and_a_running_server(tmp_path: Path) -> None:
    kafka = subprocess.run(
        [sys.executable, "-m", "turnlog.cli", "reseal", "--log", "kafka://broker:9092"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert kafka.returncode == 1 and "immutable" in kafka.stderr
    running = EmbeddedLog(path=tmp_path / "data" / "log.db")  # holds the data directory, as a server does
    await running.start()
    try:
        busy = reseal(tmp_path / "data")
    finally:
        await running.close()
    assert busy.returncode == 1 and "stop it first" in busy.stderr
