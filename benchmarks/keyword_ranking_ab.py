"""The embedded index's keyword ranking, this tree against another checkout's, in one process over one index.

On a shared 2-core machine the same code can run a third slower from one process to the next, more than a change
to the keyword query moves it; timed side by side in one process, query by query and each tree first in turn, the
machine's drift falls on both alike. `--before` names a checkout (e.g. `git worktree add /tmp/before REV`) whose
`projections/search/embedded_fts.py` is loaded beside this tree's; every search runs through this tree's index
(`EmbeddedSearchIndex.search`, keyword mode) with one tree's `ranked_by_bm25` or the other's, and the two must rank
the same chunks with the same scores (the run stops if not). Figures are the keyword ranking alone, per size: p50,
p95 and mean over `--queries` queries x `--rounds` rounds a side. The corpus and queries are `search_speed.py`'s;
`--files N` searches within N files picked at random for each query (as its `hybrid_3_files`), not the workspace.
Prints JSON and writes it to benchmarks/results/keyword_ranking_ab-<date>.json (or --out).

    .venv/bin/python benchmarks/keyword_ranking_ab.py --before /tmp/before [--sizes 10000 100000] [--queries 300]
        [--rounds 2] [--files N] [--out path]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from types import ModuleType

from projections.search import embedded_generations
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.index import SearchScope

from search_speed import (  # the same corpus, queries and index records as the search-speed benchmark
    CHUNKS_PER_FILE, ORG, USER, WORKSPACE, chunk_texts, chunks_for, corpus_sentences, query_texts, random_unit_vectors, summary, write_results,
)


def keyword_module_of(checkout: Path) -> ModuleType:
    """Another checkout's `embedded_fts`, loaded under a name of its own (its imports resolve in this tree)."""
    path = checkout / "projections" / "search" / "embedded_fts.py"
    spec = importlib.util.spec_from_file_location("embedded_fts_before", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a checkout of turnlog")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def compare(
    size: int, rankers: dict[str, Callable], queries: list[str], rounds: int, files: int, directory: Path
) -> dict:
    texts = chunk_texts(corpus_sentences(), size, seed=3)
    index = EmbeddedSearchIndex(directory=directory / f"index-{size}")
    await index.start()
    try:
        chunks = chunks_for(texts, random_unit_vectors(size, 384, seed=9), seed=7)  # vectors unread: keyword mode
        for batch in range(0, size, 1000):
            await index.upsert(chunks[batch : batch + 1000])
        generator, file_count = random.Random(11), (size + CHUNKS_PER_FILE - 1) // CHUNKS_PER_FILE
        scopes = [
            SearchScope(
                org_id=ORG, workspace_id=WORKSPACE, user_id=USER,
                file_ids=tuple(f"file-{number:05d}" for number in generator.sample(range(file_count), files)) if files else None,
            )
            for _ in queries
        ]
        latencies: dict[str, list[float]] = {label: [] for label in rankers}
        for round_ in range(rounds):
            for number, (query, scope) in enumerate(zip(queries, scopes)):
                labels = list(rankers) if (round_ + number) % 2 == 0 else list(reversed(rankers))
                rankings = {}
                for label in labels:
                    timed: dict = {}

                    def ranked_by_bm25(*arguments, ranker=rankers[label], timed=timed, **keywords):
                        # What one tree's ranker takes of what the index passes (an older one may take less).
                        keywords = {name: value for name, value in keywords.items() if name in inspect.signature(ranker).parameters}
                        started = time.perf_counter()
                        ranking = ranker(*arguments, **keywords)
                        timed["ms"], timed["scores"] = (time.perf_counter() - started) * 1000, list(ranking.scores.items())
                        return ranking

                    embedded_generations.ranked_by_bm25 = ranked_by_bm25
                    await index.search(scope, text=query, vector=None, limit=10, mode="bm25")
                    latencies[label].append(timed["ms"])
                    rankings[label] = timed["scores"]
                if len(set(map(tuple, rankings.values()))) != 1:
                    raise SystemExit(f"the trees rank {query!r} differently at {size} chunks")
        return {"chunks": size, **{label: summary(values) for label, values in latencies.items()}}
    finally:
        await index.close()


async def run(arguments: argparse.Namespace) -> dict:
    this_tree = embedded_generations.ranked_by_bm25
    rankers = {"before": keyword_module_of(arguments.before).ranked_by_bm25, "after": this_tree}
    queries = query_texts(corpus_sentences(), arguments.queries, seed=5)
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="turnlog-keyword-ab-") as scratch:
            sizes = [
                await compare(size, rankers, queries, arguments.rounds, arguments.files, Path(scratch))
                for size in sorted(arguments.sizes)
            ]
    finally:
        embedded_generations.ranked_by_bm25 = this_tree
    for measured in sizes:
        print(f"{measured['chunks']} chunks: before {measured['before']}, after {measured['after']}", file=sys.stderr)
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}",
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "before": str(arguments.before),
        "measured": f"the keyword ranking alone (ranked_by_bm25, a search's window for limit 10), {arguments.queries} queries"
        f" x {arguments.rounds} rounds a side, alternating query by query; both trees ranked every query the same",
        "scope": f"{arguments.files} files picked at random per query" if arguments.files else "the whole workspace",
        "sizes": sizes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the tree to compare with")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--files", type=int, default=0, help="search within this many random files per query (0: the workspace)")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    write_results(asyncio.run(run(arguments)), arguments.out, name="keyword_ranking_ab")


if __name__ == "__main__":
    main()
