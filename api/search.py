"""`POST /v1/search`: the passages of a workspace a caller may see for a query, ranked, with no generating model involved.

The same scope as a turn's document search: the caller's org, a workspace their token grants, the
files they may read (a workspace's shared files and their own owner-only ones), applied inside the
index's queries; `fileIds` only narrows it, and a file the caller cannot see there is a 422, as an
attachment would be. The ranking is the index's own (hybrid, deterministic ties), its head reordered
by the reranking model where the server runs one (`--rerank-model`), ungated; `covered` says whether
a turn's relevance gate would let it through.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.access import authenticate, context_of, require_workspace
from api.bodies import SearchBody, read_json_body
from api.files import check_attachments
from api.schemas.search import SearchPassage, SearchResults
from kernel.errors import Unavailable
from projections.search.index import SearchScope


async def search(request: Request) -> JSONResponse:
    principal = authenticate(request)
    context = context_of(request)
    body = await read_json_body(request, SearchBody, max_bytes=context.limits.max_small_body_bytes)
    require_workspace(principal, body.workspace_id)
    if context.search is None:
        raise Unavailable(
            detail="document search is not available in this process: it was started without a search index"
        )
    if body.file_ids:
        await check_attachments(context, principal, workspace_id=body.workspace_id, file_ids=body.file_ids, field="fileIds")
    scope = SearchScope(
        org_id=principal.org_id, workspace_id=body.workspace_id, user_id=principal.user_id,
        file_ids=tuple(dict.fromkeys(body.file_ids)) or None,
    )
    hits = await context.search.ranked(scope, body.query, limit=body.limit)
    results = SearchResults(
        passages=[
            SearchPassage(
                file_id=hit.file_id, chunk_id=hit.chunk_id, chunk=hit.ordinal, title=hit.title, location=hit.location,
                text=hit.text, score=hit.score, similarity=hit.similarity, rerank_score=hit.rerank_score,
            )
            for hit in hits
        ],
        covered=await context.search.covers_question(scope, body.query, hits),
    )
    return JSONResponse(results.wire())
