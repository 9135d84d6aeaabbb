"""Soak: mixed load on the embedded defaults for a long time, the server's memory and handles sampled.

Starts `turnlog serve --engine scripted` on a fresh data dir (one process: API, processors, the
inference worker, the embedded log and store) and drives it with `--users` virtual users for
`--minutes`. Each user loops over a mix of what people do:
  - a turn read to its end (half of them attach one of the user's files, so retrieval runs),
  - a turn cancelled at its first delta,
  - a turn whose stream is cut after a few deltas and resumed with `Last-Event-ID`,
  - an upload of a small Markdown file, waited for until it is indexed,
  - a search: `POST /v1/search` where the server has it, else a turn (which searches the workspace),
  - reads: the conversation list and the turns of the current conversation.
Every `--sample-s` seconds the server's resident memory (VmRSS), open file descriptors, threads and
data-dir size are sampled from /proc. Before the load, a short run of the same mix (`--first-use-s`) and
`--idle-s` idle: what the server starts only on first use (thread pools, models) is then running. After the
load stops it idles `--idle-s` seconds and samples again, so the handles can be compared with both the server
that never served (the baseline) and the one that has served and idled (after first use).

With `--probe FILE`, the server also writes what grows inside it to FILE, one JSON line every
`--probe-every-s` (Python objects by type, glibc's heap, chDB's caches; with `--tracemalloc`, the
source lines whose allocations grew): benchmarks/soak_probe/sitecustomize.py. The probe holds the
server up for a second or more at each sample (`probe_s` in each line); its objects are transient.
`--cached-conversations N` is passed to the server (`turnlog serve --cached-conversations`, default 1,000 here): a small N
fills the per-conversation caches within the run, so what memory does once they are full shows.

Memory is judged after warm-up (`--warmup-minutes`: models loaded, caches filled): the least-squares
slope of RSS over the rest of the run, in MiB per 10 minutes, and the rise from the end of warm-up
to the end. Prints JSON (and writes it with --out).

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--users 6] [--sample-s 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from api.auth import issue_token, load_or_create_secret
from kernel.sse import iter_sse
from lifecycle import free_port, stop_all, turnlog_process

QUESTIONS = (
    "How long after the full moon do spring tides come?",
    "When does the harbour gate close?",
    "What should I pack for a week of sailing in autumn?",
    "Explain a write-ahead log in two sentences.",
)
ENDINGS = ("assistant.completed", "run.failed", "run.cancelled")


# --- pure parts -----------------------------------------------------------------------------------

def slope_per_10_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per 600 s."""
    if len(points) < 2:
        return 0.0
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return 600 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread


def markdown_document(user: int, number: int) -> bytes:
    return (
        f"# Notes {user}-{number}\n\n"
        f"Spring tides follow the full moon by about two days (note {number}).\n\n"
        f"## Harbour\n\nThe harbour gate closes two hours before low water, said keeper {user}.\n"
    ).encode()


# --- sampling -------------------------------------------------------------------------------------

def process_sample(pid: int, data_dir: Path) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    data_bytes = 0
    for folder, _, names in os.walk(data_dir):  # os.walk skips what vanishes while it walks (merged parts, journals)
        for name in names:
            try:
                data_bytes += os.stat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        # Anonymous (heaps, stacks) apart from file-backed (libraries, mapped models and data files).
        "rss_anon_mib": int(fields["RssAnon"].split()[0]) / 1024,
        "rss_file_mib": int(fields["RssFile"].split()[0]) / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"]),
        "data_mib": data_bytes / 2**20,
    }


async def sampler(pid: int, data_dir: Path, every_s: float, started: float, phase: list[str], samples: list[dict]) -> None:
    """A sample every `every_s`, taken in a thread (walking the data dir must not wait on the load's event loop)."""
    next_at = time.monotonic()
    while True:
        try:
            sample = await asyncio.to_thread(process_sample, pid, data_dir)
        except Exception as error:  # a lost sample is reported, never the end of sampling
            sample = {"error": repr(error)}
        samples.append({"t_s": round(time.monotonic() - started, 1), "phase": phase[0], **sample})
        next_at += every_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def leftovers(pid: int) -> dict:
    """What the process holds: its threads by name, its descriptors by kind (to tell a leak from a pool)."""
    threads = Counter(Path(f"/proc/{pid}/task/{task}/comm").read_text().strip() for task in os.listdir(f"/proc/{pid}/task"))
    kinds: Counter = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/proc/"):  # a thread's own /proc files (chDB's per-query metrics): one kind per file name
            kinds[f"/proc/{pid}/task/*/{Path(target).name}"] += 1
        else:
            kinds[target.split(":")[0] if ":" in target else Path(target).suffix or target] += 1
    return {"threads": dict(threads.most_common()), "fds": dict(kinds.most_common())}


# --- load -----------------------------------------------------------------------------------------

@dataclass
class Tally:
    actions: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    search_api: bool | None = None


async def stream_to_end(http: httpx.AsyncClient, run_id: str, *, last_event_id: str | None = None,
                        stop_after: int | None = None, cancel_at_first_delta: bool = False) -> tuple[str | None, str | None]:
    """Reads a run's stream; returns (the last event id seen, the ending event or None if cut)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    deltas, last = 0, last_event_id
    async with http.stream("GET", f"/v1/runs/{run_id}/stream", headers=headers, timeout=120) as stream:
        stream.raise_for_status()
        async for event in iter_sse(stream.aiter_lines()):
            last = event.id or last
            if event.event in ENDINGS:
                return last, event.event
            if event.event == "assistant.delta":
                deltas += 1
                if cancel_at_first_delta and deltas == 1:
                    await http.post(f"/v1/runs/{run_id}/cancel")
                if stop_after is not None and deltas >= stop_after:
                    return last, None
    return last, None


async def submit(http: httpx.AsyncClient, conversation_id: str, text: str, **body) -> str:
    response = await http.post(f"/v1/conversations/{conversation_id}/turns",
                               json={"input": [{"type": "text", "text": text}], **body})
    response.raise_for_status()
    return response.json()["runId"]


async def upload(http: httpx.AsyncClient, workspace: str, data: bytes, name: str) -> str:
    response = await http.post("/v1/files", files={"file": (name, data)}, data={"workspaceId": workspace})
    response.raise_for_status()
    file_id = response.json()["fileId"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        response = await http.get(f"/v1/files/{file_id}")
        if response.status_code == 200 and response.json()["ingestionState"] in ("indexed", "failed"):
            return file_id
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{file_id} was not indexed in 300 s")


async def virtual_user(number: int, url: str, token: str, workspace: str, until: float, tally: Tally) -> None:
    rng = random.Random(number)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
        files: list[str] = []
        conversation_id = None
        uploads = 0
        while time.monotonic() < until:
            roll = rng.random()
            try:
                if conversation_id is None or rng.random() < 0.1:  # now and then, a new conversation
                    response = await http.post("/v1/conversations", json={"workspaceId": workspace})
                    response.raise_for_status()
                    conversation_id = response.json()["conversationId"]
                question = rng.choice(QUESTIONS)
                if roll < 0.40:
                    attach = {"attachments": [rng.choice(files)]} if files and rng.random() < 0.5 else {}
                    run_id = await submit(http, conversation_id, question, **attach)
                    _, ending = await stream_to_end(http, run_id)
                    tally.actions["turn" + ("+file" if attach else "")] += 1
                    if ending != "assistant.completed":
                        tally.failures[f"turn ended {ending}"] += 1
                elif roll < 0.55:
                    run_id = await submit(http, conversation_id, question)
                    await stream_to_end(http, run_id, cancel_at_first_delta=True)
                    tally.actions["cancel"] += 1
                elif roll < 0.70:
                    run_id = await submit(http, conversation_id, question)
                    last, ending = await stream_to_end(http, run_id, stop_after=3)
                    if ending is None:
                        _, ending = await stream_to_end(http, run_id, last_event_id=last)
                    tally.actions["reconnect"] += 1
                    if ending not in ENDINGS:
                        tally.failures["resume did not end"] += 1
                elif roll < 0.80:
                    uploads += 1
                    files.append(await upload(http, workspace, markdown_document(number, uploads), f"notes-{uploads}.md"))
                    files = files[-5:]
                    tally.actions["upload"] += 1
                elif roll < 0.90:
                    await search(http, workspace, conversation_id, question, tally)
                    tally.actions["search"] += 1
                else:
                    (await http.get("/v1/conversations", params={"workspaceId": workspace})).raise_for_status()
                    (await http.get(f"/v1/conversations/{conversation_id}/turns")).raise_for_status()
                    tally.actions["reads"] += 1
            except (httpx.HTTPError, TimeoutError) as error:
                tally.failures[type(error).__name__] += 1
                await asyncio.sleep(1)


async def search(http: httpx.AsyncClient, workspace: str, conversation_id: str, question: str, tally: Tally) -> None:
    if tally.search_api is not False:
        response = await http.post("/v1/search", json={"workspaceId": workspace, "query": question, "limit": 5})
        if response.status_code in (404, 405):
            tally.search_api = False
        else:
            response.raise_for_status()
            tally.search_api = True
            return
    # Without the search API, a turn: with documents in the workspace and `toolMode: "auto"` it searches them.
    run_id = await submit(http, conversation_id, question)
    await stream_to_end(http, run_id)


async def soak(arguments: argparse.Namespace, url: str, pid: int, data_dir: Path) -> dict:
    secret = load_or_create_secret(data_dir)
    started = time.monotonic()
    samples: list[dict] = []
    phase = ["baseline"]
    sampling = asyncio.create_task(sampler(pid, data_dir, arguments.sample_s, started, phase, samples))
    await asyncio.sleep(arguments.sample_s * 1.5)  # two samples of the idle server

    async def load(seconds: float, tally: Tally) -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(
            virtual_user(number, url, issue_token(secret, user_id=f"soak{number}", org_id=f"org_soak{number % 3}",
                                                  workspace_ids=[f"ws_soak{number}"]), f"ws_soak{number}", until, tally)
            for number in range(arguments.users)
        ))

    async def idle(name: str) -> dict:
        phase[0] = name
        await asyncio.sleep(arguments.idle_s)
        samples.append({"t_s": round(time.monotonic() - started, 1), "phase": name, **process_sample(pid, data_dir)})
        return leftovers(pid)

    # First use: a short run of the same mix starts what the server starts only when first needed (thread pools,
    # models), then it idles; the handles after the long load are compared with that too, not only with a server
    # that has never served a request.
    phase[0] = "first use"
    first_use = Tally()
    await load(arguments.first_use_s, first_use)
    left_after_first_use = await idle("first-use idle")
    tally = Tally()
    phase[0] = "load"
    await load(arguments.minutes * 60, tally)
    left_after_idle = await idle("idle")
    sampling.cancel()
    return {
        **summarise(samples, tally, arguments), "first_use_actions": dict(first_use.actions),
        "left_after_first_use": left_after_first_use, "left_after_idle": left_after_idle,
    }


def summarise(all_samples: list[dict], tally: Tally, arguments: argparse.Namespace) -> dict:
    samples = [sample for sample in all_samples if "error" not in sample]
    baseline = [sample for sample in samples if sample["phase"] == "baseline"]
    load = [sample for sample in samples if sample["phase"] == "load"]
    warm_from = load[0]["t_s"] + arguments.warmup_minutes * 60 if load else 0
    warm = [sample for sample in load if sample["t_s"] >= warm_from]
    idle = [sample for sample in samples if sample["phase"] == "idle"]
    first_use = [sample for sample in samples if sample["phase"] == "first-use idle"]
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "server": "turnlog serve --engine scripted (embedded defaults: SQLite log, chDB store, embedded index)",
        "minutes": arguments.minutes, "users": arguments.users, "load_average_end": os.getloadavg()[0],
        "actions": dict(tally.actions), "failures": dict(tally.failures),
        "search": "POST /v1/search" if tally.search_api else "turns with a workspace file search",
        "rss_mib": {
            "baseline": baseline[-1]["rss_mib"] if baseline else None,
            "after_first_use": first_use[-1]["rss_mib"] if first_use else None,
            "end_of_warmup": warm[0]["rss_mib"] if warm else None,
            "end_of_load": load[-1]["rss_mib"] if load else None,
            "max": max(sample["rss_mib"] for sample in samples),
            "after_idle": idle[-1]["rss_mib"] if idle else None,
            "slope_after_warmup_mib_per_10_min": round(slope_per_10_min([(s["t_s"], s["rss_mib"]) for s in warm]), 2),
        },
        "rss_anon_mib": {
            "after_first_use": first_use[-1]["rss_anon_mib"] if first_use else None,
            "end_of_warmup": warm[0]["rss_anon_mib"] if warm else None,
            "end_of_load": load[-1]["rss_anon_mib"] if load else None,
            "slope_after_warmup_mib_per_10_min": round(slope_per_10_min([(s["t_s"], s["rss_anon_mib"]) for s in warm]), 2),
        },
        "fds": {
            "baseline": baseline[-1]["fds"] if baseline else None,
            "after_first_use": first_use[-1]["fds"] if first_use else None,
            "max": max(sample["fds"] for sample in samples),
            "after_idle": idle[-1]["fds"] if idle else None,
        },
        "threads": {
            "baseline": baseline[-1]["threads"] if baseline else None,
            "after_first_use": first_use[-1]["threads"] if first_use else None,
            "after_idle": idle[-1]["threads"] if idle else None,
        },
        "data_mib_end": samples[-1]["data_mib"],
        "lost_samples": [sample for sample in all_samples if "error" in sample],
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--warmup-minutes", type=float, default=5)
    parser.add_argument("--idle-s", type=float, default=30)
    parser.add_argument("--first-use-s", type=float, default=30,
                        help="a run of the mix before the load, then --idle-s idle: the warm baseline (long enough, and"
                             " with --warmup-minutes 0, a warm-up after which the whole load is judged)")
    parser.add_argument("--token-delay-ms", default="20")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--probe", type=Path, help="the server writes what grows inside it here (JSON lines)")
    parser.add_argument("--probe-every-s", type=float, default=120)
    parser.add_argument("--tracemalloc", action="store_true", help="with --probe: trace Python allocations too")
    parser.add_argument("--cached-conversations", type=int,
                        help="the server's --cached-conversations (default: the server's, 1,000 on the embedded log)")
    arguments = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="turnlog-soak-"))
    port = free_port()
    if arguments.probe:
        probe_folder = str(Path(__file__).resolve().parent / "soak_probe")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [probe_folder, os.environ.get("PYTHONPATH")]))
    if arguments.probe:
        os.environ["TURNLOG_SOAK_PROBE"] = str(arguments.probe.resolve())
        os.environ["TURNLOG_SOAK_PROBE_S"] = str(arguments.probe_every_s)
        os.environ["TURNLOG_SOAK_PROBE_CHDB"] = str(data_dir / "read-models")
        if arguments.tracemalloc:
            os.environ["PYTHONTRACEMALLOC"] = "1"
    url = f"http://127.0.0.1:{port}"
    process = turnlog_process("serve", "--engine", "scripted", "--token-delay-ms", arguments.token_delay_ms,
                              "--answer-tokens", "40", "--port", str(port), "--data-dir", str(data_dir),
                              *(("--cached-conversations", str(arguments.cached_conversations))
                                if arguments.cached_conversations else ()))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                sys.exit("the server did not start")
            time.sleep(0.2)
        result = asyncio.run(soak(arguments, url, process.pid, data_dir))
    finally:
        stop_all([process])
        shutil.rmtree(data_dir, ignore_errors=True)
    summary = {key: value for key, value in result.items() if key != "samples"}
    print(json.dumps(summary, indent=2))
    if arguments.out:
        arguments.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
