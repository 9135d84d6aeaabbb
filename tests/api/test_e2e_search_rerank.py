"""End to end over real HTTP: a server started with `--rerank-model` reorders `POST /v1/search`'s head by the model,
within the same scope as without it, and its runs still search and cite.

The model is a small seeded cross-encoder saved to disk (`tiny_cross_encoder`): no trained one installs here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import e2e_server
from e2e_server import create_conversation, indexed_file, submit_turn, wait_for_run

pytestmark = pytest.mark.slow  # a server of its own; the first upload loads the embedding model

DEPTH = 3
HARBOUR_MD = (  # five sections, five passages (a chunk never crosses a heading): a list to reorder
    b"# Harbour notes\n\n"
    b"## Gate\n\nThe harbour gate closes two hours before low water.\n\n"
    b"## Tides\n\nSpring tides follow the full moon by about two days.\n\n"
    b"## Ferries\n\nFerries wait outside the gate until the tide turns.\n\n"
    b"## Ledger\n\nThe lighthouse keeper logs every tide in a ledger.\n\n"
    b"## Sandbar\n\nLow water at the harbour mouth leaves the sandbar dry.\n"
)
SECRET = b"# Gate plan\n\nOur harbour gate closes at dawn, two hours before low water.\n"


@pytest.fixture(scope="module")
def reranking_server(tmp_path_factory, tiny_cross_encoder) -> Iterator[e2e_server.TurnlogServer]:
    server = e2e_server.TurnlogServer(
        data_dir=tmp_path_factory.mktemp("rerank") / "data",
        extra_args=("--rerank-model", str(tiny_cross_encoder), "--rerank-depth", str(DEPTH)),
    ).start()
    try:
        yield server
    finally:
        server.stop()


async def test_the_head_of_a_search_comes_in_the_model_s_order_and_the_rest_in_the_index_s(reranking_server):
    owner = reranking_server.new_user()
    stranger = reranking_server.new_user(workspaces=list(owner.workspaces))  # another org, the same workspace name
    async with owner.client() as client, stranger.client() as strangers:
        await indexed_file(strangers, stranger.workspace, "plan.md", SECRET)
        mine = await indexed_file(client, owner.workspace, "harbour.md", HARBOUR_MD)
        response = await client.post(
            "/v1/search", json={"workspaceId": owner.workspace, "query": "When does the harbour gate close?", "limit": 50},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        passages = response.json()["passages"]
        assert len(passages) > DEPTH and {passage["fileId"] for passage in passages} == {mine}
        head, rest = passages[:DEPTH], passages[DEPTH:]
        assert all(isinstance(passage["rerankScore"], float) for passage in head)
        assert [p["rerankScore"] for p in head] == sorted((p["rerankScore"] for p in head), reverse=True)
        assert all(passage["rerankScore"] is None for passage in rest)
        assert [p["score"] for p in rest] == sorted((p["score"] for p in rest), reverse=True)  # the index's own order
        assert min(p["score"] for p in head) >= max(p["score"] for p in rest)  # the head is the fused list's best

        again = await client.post(
            "/v1/search", json={"workspaceId": owner.workspace, "query": "When does the harbour gate close?", "limit": 50},
            timeout=120,
        )
        assert again.json()["passages"] == passages

        conversation = await create_conversation(client, owner.workspace)
        accepted = await submit_turn(client, conversation, "When does the harbour gate close?")
        run = await wait_for_run(client, accepted["runId"], timeout_s=60)
        assert run["status"] == "completed", run
        turns = (await client.get(f"/v1/conversations/{conversation}/turns", params={"afterSeq": 0})).json()["turns"]
        assert {source["sourceId"] for source in turns[-1]["sources"]} == {mine}
