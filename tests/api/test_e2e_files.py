"""End to end over real HTTP: uploading files, watching them be ingested, listing, deleting, and who may see them.

Each test runs against a real `turnlog serve` and against a Kafka fleet whose ingester is a worker
process of its own (`fast_server`); files are real PDFs (fpdf2), Word documents (python-docx) and
Markdown. The shared servers take uploads of up to `E2E_MAX_UPLOAD_MB` (1 MiB).
"""

from __future__ import annotations

import asyncio
import io
import time

import httpx
import pytest
from fpdf import FPDF

from e2e_server import assert_problem, create_conversation, text_input, unique
from projections.search.embedded import EmbeddedSearchIndex

MAX_UPLOAD_BYTES = 1024 * 1024  # tests/conftest.py: E2E_MAX_UPLOAD_MB
STATE_ORDER = ("pending", "extracting", "indexing", "indexed")
INGESTION_TIMEOUT_S = 90.0  # the first upload of a server loads the embedding model (~7 s alone, more on a busy CI box)


def report_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_title("Lighthouse Operations")
    pdf.set_font("Helvetica", size=12)
    for text in (
        "The keeper trims the wick at dusk and winds the clockwork every four hours.",
        "Fog signals sound twice a minute whenever visibility falls below two miles.",
        "Supplies arrive by boat on the first Monday of each month, weather permitting.",
    ):
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def handbook_docx() -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = "Keeper Handbook"
    document.add_heading("Duties", level=1)
    document.add_paragraph("Log the weather at every watch and report wrecks to the coast guard.")
    output = io.BytesIO()
    document.save(output)
    return output.getvalue()


NOTES_MD = b"# Tide notes\n\nSpring tides follow the full moon by about two days.\n"


async def patiently(client: httpx.AsyncClient, method: str, url: str, *, patience_s: float = 15.0, **options) -> httpx.Response:
    """A request as a client that honours `503` + `Retry-After` would make it: on a busy two-core box the
    read models can lag the log for seconds (a process loading the embedding model stalls a moment)."""
    deadline = time.monotonic() + patience_s
    response = await client.request(method, url, **options)
    while response.status_code == 503 and time.monotonic() < deadline:
        await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 1.0))
        response = await client.request(method, url, **options)
    return response


async def upload(client: httpx.AsyncClient, workspace_id: str | None, filename: str, data: bytes, *,
                 content_type: str | None = None, acl: str | None = None) -> httpx.Response:
    fields = {}
    if workspace_id is not None:
        fields["workspaceId"] = workspace_id
    if acl is not None:
        fields["acl"] = acl
    part = (filename, data, content_type) if content_type else (filename, data)
    return await client.post("/v1/files", files={"file": part}, data=fields)


async def uploaded(client: httpx.AsyncClient, workspace_id: str, filename: str, data: bytes, **options) -> dict:
    response = await upload(client, workspace_id, filename, data, **options)
    assert response.status_code == 201, response.text
    return response.json()


async def wait_for_ingestion(client: httpx.AsyncClient, file_id: str) -> tuple[dict, list[str]]:
    """Poll until the file is indexed or failed; returns it and every state seen on the way, in order."""
    deadline = time.monotonic() + INGESTION_TIMEOUT_S
    seen: list[str] = []
    while True:
        response = await patiently(client, "GET", f"/v1/files/{file_id}")
        assert response.status_code == 200, response.text
        file = response.json()
        if not seen or seen[-1] != file["ingestionState"]:
            seen.append(file["ingestionState"])
        if file["ingestionState"] in ("indexed", "failed"):
            return file, seen
        progress = file["progress"]
        assert 0 <= progress["chunksIndexed"] <= progress["chunksTotal"] or progress["chunksTotal"] == 0, file
        assert time.monotonic() < deadline, f"file {file_id} still {file['ingestionState']} after {INGESTION_TIMEOUT_S}s"
        await asyncio.sleep(0.05)


async def listed(client: httpx.AsyncClient, workspace_id: str | None = None, **params) -> list[dict]:
    if workspace_id is not None:
        params["workspaceId"] = workspace_id
    response = await patiently(client, "GET", "/v1/files", params=params)
    assert response.status_code == 200, response.text
    return response.json()["files"]


async def chunk_count(server, *, org_id: str, workspace_id: str, file_id: str) -> int:
    """Chunks in the server's own embedded search index, opened beside it (several processes may share it)."""
    index = EmbeddedSearchIndex(directory=server.data_dir / "search")
    await index.start()
    try:
        return await index.count(org_id=org_id, workspace_id=workspace_id, file_id=file_id)
    finally:
        await index.close()


# --- upload, ingestion, listing -------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_pdf_markdown_and_word_file_are_ingested_with_progress_and_listed_newest_first(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        pdf = await uploaded(client, user.workspace, "ops.pdf", report_pdf())
        assert pdf["ingestionState"] == "pending" and pdf["fileId"].startswith("file_")
        assert (pdf["filename"], pdf["mediaType"], pdf["size"], pdf["acl"]) == ("ops.pdf", "application/pdf", len(report_pdf()), "workspace")
        assert pdf["progress"] == {"chunksTotal": 0, "chunksIndexed": 0, "pages": 0}
        markdown = await uploaded(client, user.workspace, "tides.md", NOTES_MD, acl="owner")
        word = await uploaded(client, user.workspace, "handbook.docx", handbook_docx())

        for file, title, media_type, pages in (
            (pdf, "Lighthouse Operations", "application/pdf", 3),
            (markdown, "Tide notes", "text/markdown", 0),
            (word, "Keeper Handbook", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", 0),
        ):
            final, seen = await wait_for_ingestion(client, file["fileId"])
            assert final["ingestionState"] == "indexed", final
            assert (final["title"], final["mediaType"], final["progress"]["pages"]) == (title, media_type, pages)
            assert final["progress"]["chunksTotal"] == final["progress"]["chunksIndexed"] > 0
            assert "failureReason" not in final
            # States only ever move forward: pending -> extracting -> indexing -> indexed.
            assert seen == sorted(seen, key=STATE_ORDER.index), seen

        files = await listed(client, user.workspace)
        assert [file["fileId"] for file in files] == [word["fileId"], markdown["fileId"], pdf["fileId"]]
        assert {file["ingestionState"] for file in files} == {"indexed"}
        first_page = (await patiently(client, "GET", "/v1/files", params={"workspaceId": user.workspace, "limit": 2})).json()
        assert [file["fileId"] for file in first_page["files"]] == [word["fileId"], markdown["fileId"]]
        rest = await listed(client, user.workspace, limit=2, before=first_page["nextBefore"])
        assert [file["fileId"] for file in rest] == [pdf["fileId"]]


@pytest.mark.slow
async def test_a_corrupt_pdf_ends_failed_with_a_reason(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        file = await uploaded(client, user.workspace, "broken.pdf", b"%PDF-1.7\n" + b"\x00garbage" * 200)
        final, _ = await wait_for_ingestion(client, file["fileId"])
        assert final["ingestionState"] == "failed"
        assert "damaged" in final["failureReason"], final
        assert [file["ingestionState"] for file in await listed(client, user.workspace)] == ["failed"]


@pytest.mark.slow
async def test_a_deleted_file_leaves_the_list_and_the_index_and_answers_404(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        kept = await uploaded(client, user.workspace, "kept.md", NOTES_MD)
        doomed = await uploaded(client, user.workspace, "doomed.md", b"# Doomed\n\nThis file will be deleted soon.\n")
        for file in (kept, doomed):
            assert (await wait_for_ingestion(client, file["fileId"]))[0]["ingestionState"] == "indexed"
        where = {"org_id": user.org_id, "workspace_id": user.workspace}
        assert await chunk_count(fast_server, **where, file_id=doomed["fileId"]) > 0

        response = await patiently(client, "DELETE", f"/v1/files/{doomed['fileId']}")
        assert response.status_code == 204, response.text
        assert_problem(await patiently(client, "GET", f"/v1/files/{doomed['fileId']}"), 404)
        assert_problem(await patiently(client, "DELETE", f"/v1/files/{doomed['fileId']}"), 404)
        assert [file["fileId"] for file in await listed(client, user.workspace)] == [kept["fileId"]]
        deadline = time.monotonic() + 30
        while await chunk_count(fast_server, **where, file_id=doomed["fileId"]) > 0:
            assert time.monotonic() < deadline, "the deleted file's chunks are still in the index"
            await asyncio.sleep(0.1)
        assert await chunk_count(fast_server, **where, file_id=kept["fileId"]) > 0


# --- refused uploads ------------------------------------------------------------------------------------


async def test_a_file_over_the_limit_is_413_and_nothing_is_listed(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        response = await upload(client, user.workspace, "big.txt", b"a" * (MAX_UPLOAD_BYTES + 1))
        problem = assert_problem(response, 413)
        assert problem["maxBytes"] == MAX_UPLOAD_BYTES
        assert "1 MiB" in problem["detail"]

        # Chunked, with no Content-Length to refuse up front: the limit holds while reading.
        boundary = "turnlogboundary"

        async def body():
            yield (f'--{boundary}\r\nContent-Disposition: form-data; name="workspaceId"\r\n\r\n{user.workspace}\r\n'
                   f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n').encode()
            for _ in range(40):
                yield b"b" * 32768
            yield f"\r\n--{boundary}--\r\n".encode()

        response = await client.post(
            "/v1/files", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        assert assert_problem(response, 413)["maxBytes"] == MAX_UPLOAD_BYTES
        assert await listed(client, user.workspace) == []


@pytest.mark.parametrize(
    ("filename", "data", "content_type", "named"),
    [
        ("setup.exe", b"MZ\x90\x00 program", None, "'setup.exe' is a .exe file"),
        ("fake.pdf", b"just some text pretending", "application/pdf", "is named .pdf but its bytes are not a PDF"),
        ("legacy.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, None, "save it as .docx"),
    ],
)
async def test_a_file_turnlog_cannot_read_is_415_saying_what_it_reads(fast_server, filename, data, content_type, named):
    user = fast_server.new_user()
    async with user.client() as client:
        problem = assert_problem(await upload(client, user.workspace, filename, data, content_type=content_type), 415)
        assert named in problem["detail"]
        assert "PDF, Word (.docx), HTML, Markdown and plain text" in problem["detail"]
        assert "application/pdf" in problem["supported"]
        assert await listed(client, user.workspace) == []


async def test_bad_upload_forms_are_400_403_or_415_and_store_nothing(fast_server):
    user = fast_server.new_user()
    async with user.client() as client:
        problem = assert_problem(await upload(client, None, "a.md", NOTES_MD), 400)
        assert problem["errors"] == [{"field": "workspaceId", "message": "field is required"}]
        assert "acl" in assert_problem(await upload(client, user.workspace, "a.md", NOTES_MD, acl="everyone"), 400)["detail"]
        assert "empty" in assert_problem(await upload(client, user.workspace, "a.md", b""), 400)["detail"]
        assert "workspace ws_elsewhere" in assert_problem(await upload(client, "ws_elsewhere", "a.md", NOTES_MD), 403)["detail"]
        response = await client.post("/v1/files", json={"workspaceId": user.workspace})
        assert "multipart/form-data" in assert_problem(response, 415)["detail"]
        response = await client.post("/v1/files", data={"workspaceId": user.workspace, "notes": "x"}, files={"file": ("a.md", NOTES_MD)})
        assert "unknown form field 'notes'" in assert_problem(response, 400)["detail"]
        assert await listed(client, user.workspace) == []


# --- isolation --------------------------------------------------------------------------------------------


async def test_files_are_seen_only_in_their_workspace_and_owner_only_files_only_by_their_owner(fast_server):
    alice = fast_server.new_user()
    bob = fast_server.new_user(org_id=alice.org_id, workspaces=alice.workspaces)  # same org, same workspace
    carol = fast_server.new_user(org_id=alice.org_id)  # same org, another workspace
    eve = fast_server.new_user(workspaces=alice.workspaces)  # another org, a workspace of the same name
    async with alice.client() as as_alice, bob.client() as as_bob, carol.client() as as_carol, eve.client() as as_eve:
        shared = await uploaded(as_alice, alice.workspace, "shared.md", NOTES_MD)
        private = await uploaded(as_alice, alice.workspace, "private.md", NOTES_MD, acl="owner")

        assert {file["fileId"] for file in await listed(as_alice, alice.workspace)} == {shared["fileId"], private["fileId"]}
        assert [file["fileId"] for file in await listed(as_bob, alice.workspace)] == [shared["fileId"]]
        assert (await patiently(as_bob, "GET", f"/v1/files/{shared['fileId']}")).status_code == 200
        assert await listed(as_carol) == [] and await listed(as_eve) == [] and await listed(as_eve, alice.workspace) == []
        assert_problem(await patiently(as_carol, "GET", "/v1/files", params={"workspaceId": alice.workspace}), 403)

        # A file you may not see answers exactly like one that does not exist.
        missing = assert_problem(await patiently(as_alice, "GET", "/v1/files/file_01JZZZZZZZZZZZZZZZZZZZZZZZ"), 404)
        for client, file in ((as_bob, private), (as_carol, shared), (as_carol, private), (as_eve, shared), (as_eve, private)):
            for method in ("GET", "DELETE"):
                problem = assert_problem(await patiently(client, method, f"/v1/files/{file['fileId']}"), 404)
                assert problem["detail"] == f"file {file['fileId']} does not exist"
                assert set(problem) == set(missing)
        # Bob sees the shared file but did not upload it: he cannot delete it.
        refused = await patiently(as_bob, "DELETE", f"/v1/files/{shared['fileId']}")
        assert "only the user who uploaded" in assert_problem(refused, 403)["detail"]
        assert (await patiently(as_alice, "GET", f"/v1/files/{private['fileId']}")).status_code == 200


async def test_a_turn_may_attach_only_files_its_author_sees_in_the_conversations_workspace(fast_server):
    alice = fast_server.new_user(workspaces=[unique("ws"), unique("ws")])
    bob = fast_server.new_user(org_id=alice.org_id, workspaces=alice.workspaces)
    async with alice.client() as as_alice, bob.client() as as_bob:
        shared = await uploaded(as_alice, alice.workspaces[0], "shared.md", NOTES_MD)
        private = await uploaded(as_alice, alice.workspaces[0], "private.md", NOTES_MD, acl="owner")
        elsewhere = await uploaded(as_alice, alice.workspaces[1], "elsewhere.md", NOTES_MD)
        conversation_id = await create_conversation(as_alice, alice.workspaces[0])
        bobs_conversation = await create_conversation(as_bob, alice.workspaces[0])

        def turn(*file_ids: str) -> dict:
            return {"input": text_input("What do the tide notes say?"), "attachments": list(file_ids)}

        refused = await patiently(as_alice, "POST", f"/v1/conversations/{conversation_id}/turns", json=turn(shared["fileId"], elsewhere["fileId"]))
        problem = assert_problem(refused, 422)
        assert problem["errors"] == [
            {"field": "attachments[1]", "message": f"no file {elsewhere['fileId']} in workspace {alice.workspaces[0]}"}
        ]
        refused = await patiently(as_bob, "POST", f"/v1/conversations/{bobs_conversation}/turns", json=turn(private["fileId"]))
        assert assert_problem(refused, 422)["errors"][0]["field"] == "attachments[0]"

        accepted = await patiently(as_alice, "POST", f"/v1/conversations/{conversation_id}/turns", json=turn(shared["fileId"], private["fileId"]),
                                  headers={"Idempotency-Key": unique("turn")})  # a retried 503 is the same turn
        assert accepted.status_code == 202, accepted.text
        accepted = await patiently(as_bob, "POST", f"/v1/conversations/{bobs_conversation}/turns", json=turn(shared["fileId"]),
                                  headers={"Idempotency-Key": unique("turn")})
        assert accepted.status_code == 202, accepted.text
