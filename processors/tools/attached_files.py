"""The files a tool may read for its caller: one the caller can see (the read models' scope), with its bytes."""

from events.blobs import BlobStore
from kernel.envelope import Actor
from projections.read_models import ReadModels, Scope


class AttachedFiles:
    """`read(actor, file_id)`: the file's name and bytes, or None when the actor may not see it (or it is gone)."""

    def __init__(self, *, read_models: ReadModels, blobs: BlobStore) -> None:
        self._read_models = read_models
        self._blobs = blobs

    async def read(self, actor: Actor, file_id: str) -> tuple[str, bytes] | None:
        scope = Scope(org_id=actor.org_id, owner_id=actor.user_id, workspace_ids=(actor.workspace_id,))
        view = await self._read_models.file(scope, file_id)
        if view is None:
            return None
        return view.filename, await self._blobs.get(view.digest)
