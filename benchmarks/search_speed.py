"""Search speed of the embedded index (SQLite FTS5 + exact cosine, RRF) at 10k and 100k chunks.

The corpus is real English prose: sentences from the licence texts in /usr/share/common-licenses
and from the docstrings of Python's standard library, drawn at random (fixed seed) into chunks of
4-9 sentences under made-up file titles. All chunks sit in the one workspace the queries search
(the worst case: every chunk is a candidate), and 10% of them are owner-only chunks of other
users, so the ACL filter has work to do.

Vectors: the first `--real-vectors` chunks (default 1,000) and every query are embedded with
all-MiniLM-L6-v2. Chunks beyond that get random unit vectors: these chunks run to the model's
256-token window, which a 2-core CPU embeds at 15-30 a second (100k would take one to two hours),
and exact cosine costs the same whatever the values. The 100k corpus starts with the 10k one.

Queries: 4-8 consecutive words of a corpus sentence. For each size: build time, the first query
(it reads the workspace's vectors into memory), the first query after a write (the cache catches
up), then latency over `--queries` queries per mode (hybrid, bm25, vector, and hybrid scoped to
three files), one at a time. `--runs` repeats all of it on a fresh index and reports the median
and the spread of the runs' percentiles. Prints JSON and writes it to
benchmarks/results/search_speed-<date>.json (or --out).

    .venv/bin/python benchmarks/search_speed.py [--sizes 10000 100000] [--queries 300] [--runs 3] [--blas-threads N] [--out path]
"""

import argparse
import ast
import asyncio
import json
import os
import platform
import random
import re
import sqlite3
import statistics
import sys
import sysconfig
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from projections.search.embedded import EmbeddedSearchIndex
from projections.search.embedding import MiniLMEmbedder
from projections.search.index import IndexedChunk, SearchScope
from turnlog.blas_threads import BLAS_THREADS, limit_blas_threads

ORG, WORKSPACE, USER = "org_bench", "ws_bench", "user_bench"
CHUNKS_PER_FILE = 40
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def corpus_sentences() -> list[str]:
    """Distinct English sentences of 6-60 words from the licence texts and the stdlib's docstrings."""
    texts = [path.read_text(errors="replace") for path in sorted(Path("/usr/share/common-licenses").glob("*")) if path.is_file()]
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node)
                if docstring:
                    texts.append(docstring)
    sentences = []
    for text in texts:
        for sentence in _SENTENCE_END.split(" ".join(text.split())):
            if 6 <= len(sentence.split()) <= 60:
                sentences.append(sentence)
    return list(dict.fromkeys(sentences))


def chunk_texts(sentences: list[str], count: int, seed: int) -> list[str]:
    generator = random.Random(seed)
    return [" ".join(generator.choices(sentences, k=generator.randint(4, 9))) for _ in range(count)]


def random_unit_vectors(count: int, dimensions: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dimensions), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def chunks_for(texts: list[str], vectors: np.ndarray, seed: int, first: int = 0) -> list[IndexedChunk]:
    generator = random.Random(seed)
    chunks = []
    for position, (text, vector) in enumerate(zip(texts, vectors), start=first):
        file_number = position // CHUNKS_PER_FILE
        owner_only = generator.random() < 0.10
        chunks.append(
            IndexedChunk(
                chunk_id=f"chunk-{position:07d}",
                file_id=f"file-{file_number:05d}",
                org_id=ORG,
                workspace_id=WORKSPACE,
                owner_id=f"user-{generator.randrange(50)}" if owner_only else USER,
                acl="owner" if owner_only else "workspace",
                title=f"Document {file_number}",
                location=f"page {position % CHUNKS_PER_FILE // 4 + 1}",
                ordinal=position % CHUNKS_PER_FILE,
                text=text,
                vector=vector,
            )
        )
    return chunks


def query_texts(sentences: list[str], count: int, seed: int) -> list[str]:
    generator = random.Random(seed)
    queries = []
    for sentence in generator.sample(sentences, count):
        words = sentence.split()
        length = generator.randint(4, 8)
        start = generator.randrange(max(1, len(words) - length))
        queries.append(" ".join(words[start : start + length]))
    return queries


def summary(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)

    def percentile(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))], 2)

    return {
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "max_ms": round(ordered[-1], 2),
    }


async def measure_size(
    size: int, texts: list[str], vectors: np.ndarray, queries: list[str], query_vectors: np.ndarray, data_dir: Path
) -> dict:
    chunks = chunks_for(texts[:size], vectors[:size], seed=7)
    index = EmbeddedSearchIndex(directory=data_dir / f"index-{size}")
    await index.start()
    try:
        started = time.perf_counter()
        for batch in range(0, size, 1000):
            await index.upsert(chunks[batch : batch + 1000])
        build_s = time.perf_counter() - started
        scope = SearchScope(org_id=ORG, workspace_id=WORKSPACE, user_id=USER)
        started = time.perf_counter()
        await index.search(scope, text=queries[0], vector=query_vectors[0], limit=10)
        first_query_ms = (time.perf_counter() - started) * 1000
        await index.upsert(chunks_for(texts[size : size + CHUNKS_PER_FILE], vectors[size : size + CHUNKS_PER_FILE], seed=8,
                                      first=size))
        started = time.perf_counter()
        await index.search(scope, text=queries[1], vector=query_vectors[1], limit=10)
        after_write_ms = (time.perf_counter() - started) * 1000

        file_count = (size + CHUNKS_PER_FILE - 1) // CHUNKS_PER_FILE
        generator = random.Random(11)
        modes: dict[str, dict] = {}
        for label, mode, scoped in (("hybrid", "hybrid", False), ("bm25", "bm25", False), ("vector", "vector", False),
                                    ("hybrid_3_files", "hybrid", True)):
            latencies = []
            hits_returned = []
            for query, query_vector in zip(queries, query_vectors):
                query_scope = scope
                if scoped:
                    files = tuple(f"file-{number:05d}" for number in generator.sample(range(file_count), 3))
                    query_scope = SearchScope(org_id=ORG, workspace_id=WORKSPACE, user_id=USER, file_ids=files)
                started = time.perf_counter()
                hits = await index.search(query_scope, text=query, vector=query_vector, limit=10, mode=mode)
                latencies.append((time.perf_counter() - started) * 1000)
                hits_returned.append(len(hits))
            modes[label] = {**summary(latencies), "mean_hits": round(statistics.fmean(hits_returned), 2)}
        database = data_dir / f"index-{size}" / index.generation
        return {
            "chunks": size,
            "build_s": round(build_s, 2),
            "build_chunks_per_s": round(size / build_s),
            "database_mib": round(database.stat().st_size / 2**20, 1),
            "first_query_ms (loads the workspace's vectors)": round(first_query_ms, 1),
            "query_after_a_40_chunk_upsert_ms (the vector cache catches up)": round(after_write_ms, 1),
            "queries_per_mode": len(queries),
            "latency": modes,
        }
    finally:
        await index.close()


async def run(arguments: argparse.Namespace) -> dict:
    sentences = corpus_sentences()
    largest = max(arguments.sizes)
    texts = chunk_texts(sentences, largest + CHUNKS_PER_FILE, seed=3)  # one more file: the write after the build
    queries = query_texts(sentences, arguments.queries, seed=5)
    real = min(arguments.real_vectors, len(texts))

    embedder = MiniLMEmbedder(batch_size=32)
    started = time.perf_counter()
    await embedder.start()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    real_vectors = await embedder.embed(texts[:real])
    embed_s = time.perf_counter() - started
    query_vectors = await embedder.embed(queries)
    await embedder.close()
    vectors = np.concatenate([real_vectors, random_unit_vectors(len(texts) - real, real_vectors.shape[1], seed=9)])

    runs = []
    for _ in range(arguments.runs):
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="turnlog-search-bench-") as data_dir:
            sizes = [await measure_size(size, texts, vectors, queries, query_vectors, Path(data_dir)) for size in sorted(arguments.sizes)]
        runs.append({"load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)], "sizes": sizes})
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, numpy {np.__version__}",
        "corpus": f"{len(sentences)} distinct sentences (common-licenses + stdlib docstrings), 4-9 per chunk, "
        f"{CHUNKS_PER_FILE} chunks per file, all in one workspace, 10% owner-only chunks of other users",
        "vectors": f"the first {real} chunks and all queries embedded with all-MiniLM-L6-v2 ({embed_s:.0f} s for {real} chunks, "
        f"{real / embed_s:.0f} chunks/s on this CPU; model load {load_s:.1f} s); the other chunks have random unit vectors "
        "(exact cosine costs the same whatever the values)",
        "queries": "4-8 consecutive words of a corpus sentence; limit 10; one query at a time",
        "summary": summarise(runs),
        "runs": runs,
    }


def summarise(runs: list[dict]) -> dict:
    """Per size and mode: the median of the runs' p50 and p95, and their spread (min-max)."""
    summary: dict[str, dict] = {}
    for position, size in enumerate(runs[0]["sizes"]):
        per_mode = {}
        for mode in size["latency"]:
            figures = {}
            for percentile in ("p50_ms", "p95_ms"):
                values = sorted(run["sizes"][position]["latency"][mode][percentile] for run in runs)
                figures[percentile] = f"{statistics.median(values):.1f} ({values[0]:.1f}-{values[-1]:.1f})"
            per_mode[mode] = figures
        summary[f"{size['chunks']} chunks"] = per_mode
    return summary


def add_blas_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blas-threads", type=int, default=BLAS_THREADS,
                        help="numpy's BLAS threads; the default is what turnlog's servers use, 0 leaves numpy's own (one per core)")


def use_blas_threads(arguments: argparse.Namespace) -> int | str:
    """Numpy's BLAS limited as `--blas-threads` says (turnlog/blas_threads.py); what it is, for the results."""
    if arguments.blas_threads:
        limit_blas_threads(arguments.blas_threads)
        return arguments.blas_threads
    return "numpy's default (one per core)"


def write_results(result: dict, out: Path | None, *, name: str) -> None:
    """Print a benchmark's result as JSON and write it to `out`, or to results/<name>-<date>.json beside this file."""
    text = json.dumps(result, indent=2)
    print(text)
    out = out or Path(__file__).with_name("results") / f"{name}-{result['date']}.json"
    out.write_text(text + "\n")
    print(f"written to {out}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--real-vectors", type=int, default=1_000, help="chunks embedded with the real model")
    parser.add_argument("--runs", type=int, default=3, help="repeat the measurements on a fresh index")
    add_blas_threads_option(parser)
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    blas_threads = use_blas_threads(arguments)
    result = asyncio.run(run(arguments))
    result["blas_threads"] = blas_threads
    write_results(result, arguments.out, name="search_speed")


if __name__ == "__main__":
    main()
