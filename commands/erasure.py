"""Erasure: destroy a user's or an org's data keys, then tell the derived stores to drop their data.

The order matters. The keys go first, so from that instant every sealed copy of the subject's content
(log, backups, replays, events still in flight) decodes to `Erased`; the `SubjectErased` event then
makes the projector delete the subject's rows and the ingester its files' chunks and blobs. Asking
again is safe: destroying a destroyed key does nothing, and the event is appended again. The files
must be listed before the keys go (their upload events are sealed): the API lists them from the read
models, `turnlog erase` from the log.
"""

from collections.abc import Sequence

from events.documents import FileUploaded
from events.erasure import ErasedFile, SubjectErased
from events.topics import DOCUMENTS
from kernel.codec import AvroCodec, UndecodableMessage
from kernel.envelope import Actor, Envelope, utc_now
from kernel.key_store import KeyStore
from kernel.log import EventLog
from kernel.runtime import encode
from kernel.sealing import Subject


async def erase_subject(
    subject: Subject,
    *,
    files: Sequence[ErasedFile],
    log: EventLog,
    codec: AvroCodec,
    keys: KeyStore,
    requested_by: str,
) -> SubjectErased:
    """Destroy the subject's keys and append `SubjectErased` durably; returns the event."""
    destroyed = keys.destroy(subject)
    erased = SubjectErased(
        org_id=subject.org_id,
        user_id=subject.user_id,
        files=tuple(files),
        keys_destroyed=destroyed,
        requested_by=requested_by,
        erased_at=utc_now(),
    )
    actor = Actor(user_id=requested_by, org_id=subject.org_id, workspace_id="")
    envelope = Envelope.wrap(erased, key=erased.subject_key, actor=actor)
    await log.append([encode(codec, envelope, topic=DOCUMENTS)], durable=True)
    return erased


async def files_on_the_log(subject: Subject, *, log: EventLog, codec: AvroCodec) -> list[ErasedFile]:
    """The subject's files (deleted ones too: their blobs may remain), read from `documents` while their keys open them."""
    ends = {partition: end for partition, end in (await log.end_offsets(DOCUMENTS)).items() if end >= 0}
    uploads: dict[str, ErasedFile] = {}
    reached: dict[int, int] = {}
    records = log.follow(DOCUMENTS)
    try:
        while any(reached.get(partition, -1) < end for partition, end in ends.items()):
            record = await anext(records)
            reached[record.partition] = record.offset
            try:
                envelope = codec.decode(record.value)
            except UndecodableMessage:
                continue
            match envelope.payload:
                case FileUploaded() as upload if _owned_by(subject, envelope.actor, upload.owner_id):
                    uploads[upload.file_id] = ErasedFile(
                        file_id=upload.file_id, workspace_id=upload.workspace_id, digest=upload.digest
                    )
    finally:
        await records.aclose()  # type: ignore[attr-defined]
    return list(uploads.values())


def _owned_by(subject: Subject, actor: Actor, owner_id: str) -> bool:
    return actor.org_id == subject.org_id and (subject.user_id is None or owner_id == subject.user_id)
