"""`web_search` benchmark: one call (a SearXNG-shaped search, then 3 pages read and quoted) against the local service.

Starts the test suite's local search service (`tests/processors/tools/web/local_search_service.py`: SearXNG's
JSON API from a fixture corpus, and the corpus's pages, on 127.0.0.1 in a subprocess), then calls
`WebSearchTool` as the tool runner would, `--calls` times one after the other, each with a query whose top
3 results are fixture pages (0.9-1.6 kB of HTML each) read through the whole guarded path: the SSRF rules
after resolution (loopback allowed explicitly, as a tools file's `allow_hosts`), pinned connections, the
byte cap, turnlog's HTML extraction on a worker thread, the passage choice. Beside the whole call it times
the search alone and one page read alone. `--runs` repeats it all with a fresh tool (new connections)
and reports the median and the spread of the runs' percentiles. Prints JSON and writes it to
benchmarks/results/web_search-<date>.json (or --out).

    .venv/bin/python benchmarks/web_search.py [--calls 30] [--runs 3] [--out path]

What it leaves out: a real SearXNG (whose engines take 0.5-3 s on the internet) and real pages (tens to
hundreds of kB, over TLS, from far away); this is turnlog's own cost around them.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

from lifecycle import percentile

from kernel.envelope import Actor
from processors.tools.web.searxng import SearxngSearch
from processors.tools.web.settings import WebSearchSettings
from processors.tools.web_search import WEB_SEARCH, WebSearchTool

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "processors" / "tools" / "web"))
from local_search_service import LocalSearchService  # noqa: E402  (a test helper, beside its fixtures)

ACTOR = Actor(user_id="bench", org_id="bench", workspace_id="bench")
QUERIES = ["moon", "the moon and the sun", "lunar moon earth", "moon orbit"]  # each finds 3 fixture pages


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values_ms, 0.50), 2),
        "p99_ms": round(percentile(values_ms, 0.99), 2),
        "mean_ms": round(statistics.fmean(values_ms), 2),
        "max_ms": round(max(values_ms), 2),
    }


async def one_run(base_url: str, calls: int) -> dict:
    settings = WebSearchSettings(searxng_url=base_url, max_pages=3, allow_hosts=("127.0.0.1",))
    engine = SearxngSearch(base_url=base_url, timeout_s=settings.search_timeout_s)
    tool = WebSearchTool(engine=engine, settings=settings)
    fetcher = settings.fetcher()
    try:
        for query in QUERIES:  # warm: imports, the first connections, bs4's first parse
            await tool.call(WEB_SEARCH, {"query": query}, actor=ACTOR, idempotency_key="warm", timeout_s=30.0)
        whole, searches, pages = [], [], []
        for index in range(calls):
            query = QUERIES[index % len(QUERIES)]
            started = time.perf_counter()
            result = await tool.call(WEB_SEARCH, {"query": query}, actor=ACTOR, idempotency_key=f"b:{index}", timeout_s=30.0)
            whole.append((time.perf_counter() - started) * 1000)
            read = [source for source in result.sources if not source.chunk_id.endswith("#snippet")]
            if result.status != "completed" or len(read) != 3:
                raise RuntimeError(f"call {index} did not read 3 pages: {result.status} {result.content[:300]}")
        for index in range(calls):
            started = time.perf_counter()
            hits = await engine.search(QUERIES[index % len(QUERIES)], limit=3)
            searches.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await fetcher.fetch(hits[index % len(hits)].url)
            pages.append((time.perf_counter() - started) * 1000)
        return {"call": summary(whole), "search": summary(searches), "page": summary(pages)}
    finally:
        await tool.close()
        await fetcher.close()


def median_and_spread(runs: list[dict], part: str, key: str) -> dict[str, float]:
    values = [run[part][key] for run in runs]
    return {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / f"web_search-{date.today()}.json")
    options = parser.parse_args()
    load_before = os.getloadavg()
    service = LocalSearchService.start()
    try:
        runs = [asyncio.run(one_run(service.base_url, options.calls)) for _ in range(options.runs)]
    finally:
        service.stop()
    report = {
        "benchmark": "web_search: a search and 3 pages read, against the local search service",
        "calls_per_run": options.calls,
        "runs": runs,
        "summary": {
            part: {key: median_and_spread(runs, part, key) for key in ("p50_ms", "p99_ms")} for part in ("call", "search", "page")
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before": [round(value, 2) for value in load_before],
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
