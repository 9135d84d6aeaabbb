"""Erasure in the blob store: every blob sealed under an erased subject's key is deleted.

The ingester deletes an erased subject's uploads, which `SubjectErased` names. The subject's other blobs
(export parts, whole tool results, files the code interpreter wrote) are named only inside sealed events
or in an API process's memory, unreadable once the keys are gone; but every blob sealed for a subject is
marked as theirs when it is stored, so the eraser lists the subject's marks and deletes those blobs
(`SealingBlobStore.sweep_subject`): the work is the subject's blobs, not the store's, so a huge bucket
never holds the eraser (on faust, a handler that outlasts the poll interval would be rebalanced away).
Blobs stored before marks existed are found by one sweep of every blob's header (`index_existing`, in
the background), which deletes erased subjects' blobs and marks the others. Their bytes were unreadable
from the moment the keys went; the sweeps give the space back and leave no ciphertext behind for a
future key leak to open.
"""

import asyncio
import logging
from collections.abc import Sequence

from events.erasure import SubjectErased
from events.sealed_blobs import SealingBlobStore
from events.topics import DOCUMENTS
from kernel.errors import Unavailable
from kernel.runtime import Delivery, Processor
from kernel.sealing import Subject

logger = logging.getLogger(__name__)

BLOB_ERASURE_GROUP = "blob-erasure"
INDEX_RETRY_S = 30.0  # after the blob store was unavailable, before the whole sweep starts over


class BlobEraser:
    """Deletes the erased subject's blobs when a `SubjectErased` arrives."""

    def __init__(self, blobs: SealingBlobStore) -> None:
        self._blobs = blobs

    def processor(self) -> Processor:
        return Processor(
            group=BLOB_ERASURE_GROUP,
            topics=(DOCUMENTS,),
            react=self.react,
            reacts_to=frozenset({SubjectErased.__name__}),  # uploads and their progress pass undecoded
            durable=False,  # only progress is written; sweeping again is harmless
            background=True,
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list:
        for delivery in deliveries:
            erased = delivery.envelope.payload
            if isinstance(erased, SubjectErased):
                swept = await self._blobs.sweep_subject(Subject(org_id=erased.org_id, user_id=erased.user_id))
                logger.info("%s erased: %d sealed blobs left the blob store", erased.subject_key, swept)
        return []

    async def index_existing(self, *, retry_s: float = INDEX_RETRY_S) -> None:
        """Mark the blobs stored before marks existed (deleting erased subjects' on the way), once per store."""
        try:
            while True:
                complete = await self._retrying(self._blobs.index_complete, retry_s)
                if complete:
                    return
                if complete is None:
                    continue  # the store was away: ask again before sweeping it all
                swept = await self._retrying(self._blobs.sweep_erased, retry_s)
                if swept is not None:
                    logger.info("every sealed blob is marked by owner; %d of erased subjects' left the store", swept)
        except Exception:  # a background task: what went wrong is logged here, or nowhere
            logger.exception("marking the blob store's older blobs by owner failed; erasures still sweep marked blobs")

    @staticmethod
    async def _retrying(step, retry_s: float):
        """`step()`, or None after waiting `retry_s` when the blob store is unavailable (the caller asks again)."""
        try:
            return await step()
        except Unavailable as error:
            logger.warning("the blob store is unavailable (%s): its sweep starts over in %.0f s", error.detail, retry_s)
            await asyncio.sleep(retry_s)
            return None
