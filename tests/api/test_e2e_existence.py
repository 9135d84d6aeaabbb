"""No side channel on ids (issue 18): another tenant's run or file and an id that exists nowhere are answered alike,
404 on the same path and in the same time, and neither holds the request while the log is searched.

Measured over real HTTP on both logs: the two kinds of probe alternate, so load on the machine falls on both alike.
"""

from __future__ import annotations

import statistics
import time

import pytest

from api.scoped_ids import file_scope, new_scoped_id, run_scope
from e2e_server import create_conversation, indexed_file, read_stream, submit_turn

PROBES = 31
# Both kinds of probe take one path (auth, then a tag check), so their medians differ by noise alone. A lookup that
# waited for the log, as unknown ids did before, took ~1.3 s.
MAX_MEDIAN_GAP_S = 0.005
MAX_MEDIAN_S = 0.25


async def timed_404(client, method: str, url: str) -> float:
    started = time.perf_counter()
    response = await client.request(method, url)
    elapsed = time.perf_counter() - started
    assert response.status_code == 404, (url, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    return elapsed


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/runs/{run}"), ("GET", "/v1/runs/{run}/stream"), ("POST", "/v1/runs/{run}/cancel"), ("GET", "/v1/files/{file}")],
    ids=["run", "stream", "cancel", "file"],
)
async def test_another_tenants_id_and_an_unknown_id_take_the_same_time(fast_server, method: str, path: str) -> None:
    owner, prober = fast_server.new_user(), fast_server.new_user()
    async with owner.client() as client:
        conversation_id = await create_conversation(client, owner.workspace)
        run_id = (await submit_turn(client, conversation_id, "mine alone"))["runId"]
        await read_stream(client, run_id)
        # Only the file probes need a file. Indexed before they start: a server still embedding the upload would time
        # them against its own busy cores.
        file_id = await indexed_file(client, owner.workspace, "notes.md", b"# Notes\n\nPrivate.\n") if "{file}" in path else ""
    # Ids of the same form that exist nowhere (tagged under another secret, as a guess would be).
    guess_secret = b"g" * 32
    unknown_run = new_scoped_id(guess_secret, "run", run_scope(owner.org_id, owner.user_id))
    unknown_file = new_scoped_id(guess_secret, "file", file_scope(owner.org_id, owner.workspace))

    existing_url, unknown_url = path.format(run=run_id, file=file_id), path.format(run=unknown_run, file=unknown_file)
    existing, unknown = [], []
    async with prober.client() as client:
        await timed_404(client, method, unknown_url)  # warm the connection
        for index in range(PROBES):
            # Each pair in turn leads with the other kind, so whatever the first request of a pair pays falls on both.
            pair = [(existing, existing_url), (unknown, unknown_url)]
            for times, url in reversed(pair) if index % 2 else pair:
                times.append(await timed_404(client, method, url))
    # The probes alternate, so each pair saw the same load: the median of the pairs' differences is the systematic gap,
    # which a busy machine's noise (it moves both medians by several ms at a load of 13) does not fake or hide.
    gap = abs(statistics.median(e - u for e, u in zip(existing, unknown)))
    assert max(statistics.median(existing), statistics.median(unknown)) < MAX_MEDIAN_S, (existing, unknown)
    assert gap < MAX_MEDIAN_GAP_S, (
        f"probes differ by {gap * 1000:.1f} ms at the median (medians {statistics.median(existing) * 1000:.1f} and"
        f" {statistics.median(unknown) * 1000:.1f} ms): existing {existing}, unknown {unknown}"
    )
