"""Erasure in the blob store: every blob sealed under an erased subject's key is deleted.

The ingester deletes an erased subject's uploads, which `SubjectErased` names. The subject's other blobs
(export parts, whole tool results, files the code interpreter wrote) are named only inside sealed events
or in an API process's memory, unreadable once the keys are gone; but each blob's own header names the
key that sealed it, so a sweep of the store finds them all (`SealingBlobStore.sweep_erased`). Their bytes
were unreadable from the moment the keys went; the sweep gives the space back and leaves no ciphertext
behind for a future key leak to open.
"""

import logging
from collections.abc import Sequence

from events.erasure import SubjectErased
from events.sealed_blobs import SealingBlobStore
from events.topics import DOCUMENTS
from kernel.runtime import Delivery, Processor

logger = logging.getLogger(__name__)

BLOB_ERASURE_GROUP = "blob-erasure"


class BlobEraser:
    """Sweeps the blob store for the erased subject's blobs when a `SubjectErased` arrives."""

    def __init__(self, blobs: SealingBlobStore) -> None:
        self._blobs = blobs

    def processor(self) -> Processor:
        return Processor(
            group=BLOB_ERASURE_GROUP,
            topics=(DOCUMENTS,),
            react=self.react,
            reacts_to=frozenset({SubjectErased.__name__}),  # uploads and their progress pass undecoded
            durable=False,  # only progress is written; sweeping again is harmless
        )

    async def react(self, deliveries: Sequence[Delivery]) -> list:
        erasures = [delivery.envelope.payload for delivery in deliveries if isinstance(delivery.envelope.payload, SubjectErased)]
        if erasures:  # one sweep serves every erasure of the batch: it deletes whatever any erased key sealed
            swept = await self._blobs.sweep_erased()
            logger.info("%s erased: %d sealed blobs left the blob store", ", ".join(e.subject_key for e in erasures), swept)
        return []
