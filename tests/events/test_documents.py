"""The documents topic: which topic and key each file event takes, how long the topic keeps them, Avro round trips."""

from datetime import UTC, datetime

import pytest

from events.catalog import EVENT_TYPES
from kernel.codec import AvroCodec
from events.documents import (
    DOCUMENT_EVENT_TYPES,
    FileDeleted,
    FileIndexed,
    FileIngestionFailed,
    FileIngestionProgressed,
    FileUploaded,
)
from kernel.envelope import Envelope
from events.topics import DOCUMENTS, key_of, topic_of
from events.topology import turnlog_topics
from kernel.envelope import Actor

NOW = datetime(2026, 4, 25, 17, 10, tzinfo=UTC)
EVENTS = (
    FileUploaded(
        file_id="file_1", workspace_id="ws_1", owner_id="u_1", acl="owner", filename="Q3 report.pdf",
        media_type="application/pdf", size=123_456_789_012, digest="ab" * 32, uploaded_at=NOW,
    ),
    FileIngestionProgressed(file_id="file_1", state="extracting"),
    FileIngestionProgressed(file_id="file_1", state="indexing", pages=3, chunks_total=40, chunks_indexed=32),
    FileIndexed(file_id="file_1", title="Quarterly Report", pages=3, chunks=40),
    FileIngestionFailed(file_id="file_1", reason="the PDF is encrypted"),
    FileDeleted(file_id="file_1", deleted_at=NOW),
)


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: type(event).__name__)
def test_file_events_live_on_the_documents_topic_keyed_by_file_id(event) -> None:
    assert topic_of(event) == DOCUMENTS
    assert key_of(event) == "file_1"


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: type(event).__name__)
def test_file_events_round_trip_through_avro(event) -> None:
    codec = AvroCodec(payload_types=EVENT_TYPES)
    envelope = Envelope.wrap(event, key="file_1", actor=Actor(user_id="u_1", org_id="org_1", workspace_id="ws_1"))
    assert codec.decode(codec.encode(envelope)) == envelope


def test_the_documents_topic_is_kept_forever_like_the_conversation_history() -> None:
    spec = turnlog_topics().spec_for(DOCUMENTS)
    assert spec.retention is None
    assert spec.topic_config()["retention.ms"] == "-1"
    assert set(DOCUMENT_EVENT_TYPES) <= set(EVENT_TYPES)
