"""Faults on one machine, end to end over HTTP: the log's disk fills up, the read-model store goes away.

- A full disk under the embedded log (a size-limited tmpfs holding only the log file): appends answer 503
  problem+json with Retry-After, nothing is half-written (a retry with the same Idempotency-Key gives exactly one
  turn), and once space is freed the same server goes on: every accepted run completes.
- The ClickHouse store stopped: reads answer 503 problem+json with Retry-After, `/readyz` names the `store` check,
  a turn is still accepted onto the log (and streams from it), and once the store is back the projections catch up.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import clickhouse_http
import e2e_server as e2e
from e2e_server import TurnlogServer, assert_problem, create_conversation, list_turns, read_stream, text_input

pytestmark = pytest.mark.slow

CLICKHOUSE_USER = "turnlog"
CLICKHOUSE_PASSWORD = "p@ss:w/rd %"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: a real filesystem that fills up. Mounting needs root (or CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem says ENOSPC; the file, to delete when space should come back."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (64 * 1024, 4 * 1024):  # then the last pages
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    return filler


async def post_turn(client: httpx.AsyncClient, conversation_id: str, text: str, key: str) -> httpx.Response:
    return await client.post(
        f"/v1/conversations/{conversation_id}/turns", json={"input": text_input(text) * 4}, headers={"Idempotency-Key": key}
    )


async def test_a_full_disk_under_the_log_answers_503_writes_nothing_half_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    server = TurnlogServer(
        data_dir=tmp_path / "data", token_delay_ms=1, answer_tokens=8,
        # Big turns fill the log fast; the context is made to fit them, so each run is expected to complete.
        extra_args=["--log", f"sqlite://{small_disk / 'log.db'}", "--context-tokens", "200000"],
    ).start()
    try:
        user = server.new_user()
        async with user.client() as client:
            # Conversations made while there is room, so each turn below is the first of its own conversation.
            conversations = [await create_conversation(client, user.workspace) for _ in range(60)]
            filler = fill(small_disk)
            big = "the disk is full " * 1_800  # 4 parts of ~30 KB: a few of these pass any room left in the WAL
            sent: dict[str, str] = {}  # idempotency key -> conversation
            full: httpx.Response | None = None
            for index, conversation_id in enumerate(conversations):
                key = f"full-{index}"
                sent[key] = conversation_id
                response = await post_turn(client, conversation_id, big, key)
                if response.status_code == 503 and "disk is full" in response.json().get("detail", ""):
                    full = response
                    break
                assert response.status_code in (202, 503), response.text  # 503: accepted, not decided in time
            assert full is not None, f"no append failed on a full disk:\n{server.output()}"
            problem = assert_problem(full, 503)
            assert full.headers["retry-after"] == "30" and problem["retryAfter"] == 30
            assert "nothing was written" in problem["detail"]
            assert server.process.poll() is None, server.output()
            # Reads are answered: from the read models, or (when the projector cannot record its progress on the full
            # log, so read-your-writes cannot be promised) 503 with Retry-After. Readiness says why.
            read = await client.get(f"/v1/conversations/{conversations[-1]}")
            if read.status_code != 200:
                assert_problem(read, 503)
                assert int(read.headers["retry-after"]) > 0
            not_ready = assert_problem(await client.get("/readyz"), 503)
            assert "log" in not_ready["failedChecks"] and "disk is full" in not_ready["detail"], not_ready

            filler.unlink()  # space comes back
            runs: dict[str, str] = {}
            deadline = time.monotonic() + 60
            for key, conversation_id in sent.items():  # every client retries with its key
                while True:
                    response = await post_turn(client, conversation_id, big, key)
                    if response.status_code == 202:
                        runs[key] = response.json()["runId"]
                        break
                    assert response.status_code == 503 and time.monotonic() < deadline, response.text
                    await asyncio.sleep(0.2)
            for key, run_id in runs.items():
                run = await e2e.wait_for_run(client, run_id, timeout_s=60)
                assert run["status"] == "completed", (run, server.output()[-6000:])
                turns = await list_turns(client, sent[key])
                assert [turn["role"] for turn in turns] == ["user", "assistant"], turns  # exactly once, whole
            assert server.process.poll() is None, server.output()
            assert (await client.get("/readyz")).status_code == 200
        with sqlite3.connect(f"file:{small_disk / 'log.db'}?mode=ro", uri=True) as check:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        server.stop()


@pytest.fixture
def own_clickhouse(tmp_path: Path) -> Iterator[clickhouse_http.ClickHouseHttpServer]:
    """A ClickHouse test server of this test's own: it is stopped and started again on the same port."""
    server = clickhouse_http.ClickHouseHttpServer(
        data_dir=tmp_path / "clickhouse", user=CLICKHOUSE_USER, password=CLICKHOUSE_PASSWORD
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_the_store_down_answers_503_keeps_accepting_turns_and_projections_catch_up(
    tmp_path: Path, own_clickhouse: clickhouse_http.ClickHouseHttpServer
) -> None:
    await own_clickhouse.create_database("faults")
    server = TurnlogServer(
        data_dir=tmp_path / "data", token_delay_ms=1, answer_tokens=8,
        extra_args=["--store", own_clickhouse.url("faults")],
    ).start()
    try:
        user = server.new_user()
        async with user.client() as client:
            conversation_id = await create_conversation(client, user.workspace)
            first = await e2e.submit_turn(client, conversation_id, "before the outage")
            await e2e.wait_for_run(client, first["runId"])
            assert len(await list_turns(client, conversation_id)) == 2

            own_clickhouse.stop()
            turns = await client.get(f"/v1/conversations/{conversation_id}/turns")
            problem = assert_problem(turns, 503)
            assert int(turns.headers["retry-after"]) > 0 and "retry" in problem["detail"]
            ready = await client.get("/readyz")
            not_ready = assert_problem(ready, 503)
            assert "store" in not_ready["failedChecks"] and "log" not in not_ready["failedChecks"], not_ready

            # A write still lands on the log, and its stream is served from there.
            second = await e2e.submit_turn(client, conversation_id, "during the outage")
            streamed = await read_stream(client, second["runId"])
            assert streamed[-1].event == "assistant.completed", streamed
            assert server.process.poll() is None, server.output()

            own_clickhouse.start()  # the same port and data: the store comes back
            deadline = time.monotonic() + 60
            while True:
                response = await client.get(f"/v1/conversations/{conversation_id}/turns")
                if response.status_code == 200 and len(response.json()["turns"]) == 4:
                    break
                assert time.monotonic() < deadline, f"the projections did not catch up: {response.text}"
                await asyncio.sleep(0.2)
            turns_after = response.json()["turns"]
            assert e2e.text_of_turn(turns_after[2]) == "during the outage"
            assert e2e.text_of_turn(turns_after[3]) == e2e.delta_text(streamed)
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
    finally:
        server.stop()
