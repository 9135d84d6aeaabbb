"""The files read model on a real engine: folded from document events, scoped by workspace and ACL, rebuilt by replay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from kernel.codec import AvroCodec
from events.catalog import EVENT_TYPES
from events.documents import FileDeleted, FileIndexed, FileIngestionFailed, FileIngestionProgressed, FileUploaded
from events.embedded import EmbeddedLog
from kernel.envelope import Envelope, new_id
from kernel.log import OutgoingRecord
from events.topics import DOCUMENTS
from kernel.envelope import Actor
from projections.folds import RowBatch, fold
from projections.projector import rebuild
from projections.read_models import ReadModels, Scope
from projections.store import SqlStore

UPLOADED_AT = datetime(2026, 4, 25, 9, 30, tzinfo=UTC)
ADA = Actor(user_id="ada", org_id="org_acme", workspace_id="ws_research")
BOB = Actor(user_id="bob", org_id="org_acme", workspace_id="ws_research")
EVE = Actor(user_id="eve", org_id="org_evil", workspace_id="ws_research")  # same workspace name, other tenant


def scope(actor: Actor, *workspaces: str) -> Scope:
    return Scope(org_id=actor.org_id, owner_id=actor.user_id, workspace_ids=workspaces or (actor.workspace_id,))


def uploaded(actor: Actor, *, acl: str = "workspace", filename: str = "report.pdf", workspace_id: str | None = None) -> FileUploaded:
    return FileUploaded(
        file_id=new_id("file"), workspace_id=workspace_id or actor.workspace_id, owner_id=actor.user_id, acl=acl,
        filename=filename, media_type="application/pdf", size=1234, digest="ab" * 32, uploaded_at=UPLOADED_AT,
    )


class Projection:
    """Folds events at increasing offsets into the read models, as the projector does."""

    def __init__(self, read_models: ReadModels) -> None:
        self.read_models = read_models
        self.offset = 0

    async def apply(self, *events: tuple[Actor, object]) -> None:
        batch = RowBatch()
        for actor, event in events:
            self.offset += 1
            fold(batch, Envelope.wrap(event, key=event.file_id, actor=actor), offset=self.offset)
        await self.read_models.upsert(files=batch.files, file_states=batch.file_states)


@pytest.fixture
async def projection(store: SqlStore) -> AsyncIterator[Projection]:
    read_models = ReadModels(store)
    await read_models.create_tables()
    yield Projection(read_models)


async def test_a_file_moves_through_its_states_and_shows_its_progress(projection: Projection) -> None:
    upload = uploaded(ADA)
    await projection.apply((ADA, upload))
    view = await projection.read_models.file(scope(ADA), upload.file_id)
    assert view is not None
    assert (view.state, view.filename, view.size, view.acl, view.owner_id) == ("pending", "report.pdf", 1234, "workspace", "ada")
    assert view.created_at == UPLOADED_AT

    await projection.apply(
        (ADA, FileIngestionProgressed(file_id=upload.file_id, state="extracting")),
        (ADA, FileIngestionProgressed(file_id=upload.file_id, state="indexing", pages=3, chunks_total=9, chunks_indexed=4)),
    )
    view = await projection.read_models.file(scope(ADA), upload.file_id)
    assert (view.state, view.pages, view.chunks_total, view.chunks_indexed) == ("indexing", 3, 9, 4)

    await projection.apply((ADA, FileIndexed(file_id=upload.file_id, title="Quarterly Report", pages=3, chunks=9)))
    view = await projection.read_models.file(scope(ADA), upload.file_id)
    assert (view.state, view.title, view.chunks_total, view.chunks_indexed) == ("indexed", "Quarterly Report", 9, 9)


async def test_a_failed_file_keeps_its_reason_and_a_deleted_one_disappears(projection: Projection) -> None:
    broken, doomed = uploaded(ADA, filename="broken.pdf"), uploaded(ADA, filename="doomed.pdf")
    await projection.apply(
        (ADA, broken), (ADA, doomed),
        (ADA, FileIngestionFailed(file_id=broken.file_id, reason="the PDF is damaged: EOF marker not found")),
        (ADA, FileDeleted(file_id=doomed.file_id, deleted_at=UPLOADED_AT + timedelta(minutes=1))),
    )
    failed = await projection.read_models.file(scope(ADA), broken.file_id)
    assert (failed.state, failed.failure_reason) == ("failed", "the PDF is damaged: EOF marker not found")
    assert await projection.read_models.file(scope(ADA), doomed.file_id) is None
    assert [view.file_id for view in await projection.read_models.files(scope(ADA), limit=10)] == [broken.file_id]


async def test_a_deleted_file_stays_deleted_whatever_the_ingester_appends_after_its_deletion(projection: Projection) -> None:
    """The ingester was mid-file when the deletion came: its progress and its outcome land after the deletion."""
    failed, indexed = uploaded(ADA, filename="scan.pdf"), uploaded(ADA, filename="manual.pdf")
    await projection.apply(
        (ADA, failed), (ADA, indexed),
        (ADA, FileIngestionProgressed(file_id=failed.file_id, state="extracting")),
        (ADA, FileDeleted(file_id=failed.file_id, deleted_at=UPLOADED_AT)),
        (ADA, FileDeleted(file_id=indexed.file_id, deleted_at=UPLOADED_AT)),
        (ADA, FileIngestionFailed(file_id=failed.file_id, reason="no text found in the PDF's page")),
        (ADA, FileIngestionProgressed(file_id=indexed.file_id, state="indexing", pages=2, chunks_total=4, chunks_indexed=2)),
    )
    await projection.apply((ADA, FileIndexed(file_id=indexed.file_id, title="Manual", pages=2, chunks=4)))  # a later batch
    for file_id in (failed.file_id, indexed.file_id):
        assert await projection.read_models.file(scope(ADA), file_id) is None
    assert await projection.read_models.files(scope(ADA), limit=10) == []
    assert await projection.read_models.files_by_id(scope(ADA), [failed.file_id, indexed.file_id]) == {}


async def test_shared_files_are_seen_by_the_workspace_and_owner_only_ones_by_their_owner(projection: Projection) -> None:
    shared, private = uploaded(ADA, acl="workspace"), uploaded(ADA, acl="owner")
    elsewhere = uploaded(ADA, workspace_id="ws_secret")
    await projection.apply((ADA, shared), (ADA, private), (ADA, elsewhere))
    read_models = projection.read_models

    def ids(views: Sequence) -> set[str]:
        return {view.file_id for view in views}

    assert ids(await read_models.files(scope(ADA), limit=10)) == {shared.file_id, private.file_id}
    assert ids(await read_models.files(scope(ADA, "ws_research", "ws_secret"), limit=10)) == {
        shared.file_id, private.file_id, elsewhere.file_id,
    }
    assert ids(await read_models.files(scope(BOB), limit=10)) == {shared.file_id}
    assert await read_models.file(scope(BOB), private.file_id) is None
    assert await read_models.file(scope(BOB), shared.file_id) is not None
    assert await read_models.file(scope(BOB), elsewhere.file_id) is None  # not a workspace Bob's token grants
    # Another org with a workspace of the same name sees nothing of Ada's.
    assert await read_models.files(scope(EVE), limit=10) == []
    for file_id in (shared.file_id, private.file_id):
        assert await read_models.file(scope(EVE), file_id) is None
    assert set(await read_models.files_by_id(scope(BOB), [shared.file_id, private.file_id, "file_missing"])) == {shared.file_id}


async def test_owned_files_are_the_callers_uploads_alone(projection: Projection) -> None:
    adas = [uploaded(ADA), uploaded(ADA, acl="owner"), uploaded(ADA, workspace_id="ws_other")]
    bobs_shared = uploaded(BOB)
    await projection.apply(*((ADA, upload) for upload in adas), (BOB, bobs_shared))
    read_models = projection.read_models

    wide = scope(ADA, "ws_research", "ws_other")
    assert bobs_shared.file_id in {view.file_id for view in await read_models.files(wide, limit=10)}
    owned = await read_models.files(wide, limit=10, owned=True)
    assert [view.file_id for view in owned] == [upload.file_id for upload in reversed(adas)]
    first = await read_models.files(wide, workspace_id="ws_research", limit=1, owned=True)
    rest = await read_models.files(wide, workspace_id="ws_research", before=first[-1].file_id, limit=10, owned=True)
    assert [view.file_id for view in first + rest] == [adas[1].file_id, adas[0].file_id]
    assert [view.file_id for view in await read_models.files(scope(BOB), limit=10, owned=True)] == [bobs_shared.file_id]


async def test_files_page_newest_first_within_a_workspace(projection: Projection) -> None:
    uploads = [uploaded(ADA, filename=f"{index}.md") for index in range(5)]
    await projection.apply(*((ADA, upload) for upload in uploads), (ADA, uploaded(ADA, workspace_id="ws_other")))
    wide = scope(ADA, "ws_research", "ws_other")
    first = await projection.read_models.files(wide, workspace_id="ws_research", limit=3)
    rest = await projection.read_models.files(wide, workspace_id="ws_research", before=first[-1].file_id, limit=3)
    assert [view.filename for view in first + rest] == ["4.md", "3.md", "2.md", "1.md", "0.md"]


async def test_redelivered_events_change_nothing(projection: Projection) -> None:
    upload = uploaded(ADA)
    indexed = FileIndexed(file_id=upload.file_id, title="T", pages=1, chunks=2)
    batch = RowBatch()
    for offset, event in enumerate((upload, indexed), start=1):
        fold(batch, Envelope.wrap(event, key=upload.file_id, actor=ADA), offset=offset)
    for _ in range(3):  # at-least-once: the same batch again, and again
        await projection.read_models.upsert(files=batch.files, file_states=batch.file_states)
    views = await projection.read_models.files(scope(ADA), limit=10)
    assert len(views) == 1 and views[0].state == "indexed"


async def test_replay_rebuilds_the_files_from_the_documents_topic(tmp_path, store: SqlStore) -> None:
    codec = AvroCodec(payload_types=EVENT_TYPES)
    live = ReadModels(store)
    await live.create_tables()
    log = EmbeddedLog(path=tmp_path / "log.db")
    await log.start()
    try:
        kept, gone = uploaded(ADA), uploaded(BOB, acl="owner")
        events = [
            (ADA, kept), (BOB, gone),
            (ADA, FileIngestionProgressed(file_id=kept.file_id, state="extracting")),
            (ADA, FileIndexed(file_id=kept.file_id, title="Kept", pages=2, chunks=5)),
            (BOB, FileDeleted(file_id=gone.file_id, deleted_at=UPLOADED_AT)),
        ]
        written = await log.append([
            OutgoingRecord(topic=DOCUMENTS, key=event.file_id, value=codec.encode(Envelope.wrap(event, key=event.file_id, actor=actor)))
            for actor, event in events
        ])
        batch = RowBatch()
        for record in written:
            fold(batch, codec.decode(record.value), offset=record.offset)
        await live.upsert(files=batch.files, file_states=batch.file_states)
        before = await live.snapshot()

        await live.truncate()
        replayed = await rebuild(log=log, codec=codec, live=live, fresh=live.sibling("__rebuild"))
        assert replayed == len(events)
        assert await live.snapshot() == before
        assert [view.title for view in await live.files(scope(ADA), limit=10)] == ["Kept"]
    finally:
        await log.close()
