"""What a reranking stage costs on this machine: a cross-encoder over a search's best passages, alone and after the
embedded index's hybrid search at 10k and 100k chunks.

No trained reranker installs here (docs/retrieval-quality.md), so by default the models are architecture twins of
two public ones, built with seeded random weights: `minilm-l6` has the shape of cross-encoder/ms-marco-MiniLM-L-6-v2
(BERT, 6 layers of 384, 12 heads) and `tinybert-l2` that of cross-encoder/ms-marco-TinyBERT-L-2-v2 (2 layers of 128,
2 heads); both with MiniLM's 30,522-word tokenizer. A forward pass costs the same whatever the weights' values, so
their latency is the real models' (their ranking is not: quality needs the trained weights). A directory given to
`--models` (a model saved to disk, as `--rerank-model` takes) is measured as it is.

Passages are the search-speed corpus's chunks (real English sentences, `search_speed.py`) cut to the ingester's
200-token chunks, each under its title as the stage reads them (`reranking_text`); queries are 4-8 words of a corpus
sentence. Part one times `CrossEncoderReranker.score` over `--depths` passages per query; part two, for each size in
`--sizes`, the hybrid search alone (limit = the depth) against the same search followed by the reranking, query by
query, the query already embedded (as `search_speed.py` measures). Each is `--rounds` rounds over the same queries;
figures are the median of the rounds' percentiles with their spread (min-max). Prints JSON and writes it to
benchmarks/results/rerank_cost-<date>.json (or --out).

    .venv/bin/python benchmarks/rerank_cost.py [--models minilm-l6 tinybert-l2 DIR] [--depths 8 16 24]
        [--sizes 10000 100000] [--index-depth 16] [--queries 40] [--rounds 3] [--blas-threads N] [--out path]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from processors.ingestion.chunking import DEFAULT_MAX_TOKENS
from projections.search.embedded import EmbeddedSearchIndex
from projections.search.embedding import MiniLMEmbedder, load_minilm_tokenizer
from projections.search.index import SearchScope
from projections.search.reranking import CrossEncoderReranker, reranked, reranking_text

from search_speed import (  # the same corpus, queries and index records as the search-speed benchmark
    CHUNKS_PER_FILE, ORG, USER, WORKSPACE, add_blas_threads_option, chunk_texts, chunks_for, corpus_sentences, query_texts,
    random_unit_vectors, summary, use_blas_threads, write_results,
)

# The shapes of two public MS MARCO cross-encoders (their config.json); weights are seeded random.
TWINS = {
    "minilm-l6": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "tinybert-l2": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
}


def build_twin(name: str, directory: Path) -> Path:
    """A BERT cross-encoder of `TWINS[name]`'s shape with MiniLM's tokenizer, saved to `directory/name`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    path = directory / name
    tokenizer = load_minilm_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, num_labels=1, **TWINS[name])
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def chunk_sized(texts: list[str]) -> list[str]:
    """Each text cut to the ingester's chunk size in the embedding model's word pieces."""
    tokenizer = load_minilm_tokenizer()
    cut = []
    for text in texts:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = encoding["offset_mapping"][:DEFAULT_MAX_TOKENS]
        cut.append(text[: offsets[-1][1]] if offsets else text)
    return cut


def spread(rounds: list[dict[str, float]]) -> dict[str, str]:
    """The median of the rounds' p50 and p95, and their spread."""
    figures = {}
    for percentile in ("p50_ms", "p95_ms"):
        values = sorted(round_[percentile] for round_ in rounds)
        figures[percentile] = f"{statistics.median(values):.1f} ({values[0]:.1f}-{values[-1]:.1f})"
    return figures


async def rerank_cost(reranker: CrossEncoderReranker, queries: list[str], passages: list[str], depth: int, rounds: int) -> list[dict]:
    measured = []
    for _ in range(rounds):
        latencies = []
        for number, query in enumerate(queries):
            start = number * depth % (len(passages) - depth)
            started = time.perf_counter()
            await reranker.score(query, passages[start : start + depth])
            latencies.append((time.perf_counter() - started) * 1000)
        measured.append(summary(latencies))
    return measured


async def search_then_rerank(
    size: int, chunks, queries: list[str], query_vectors: np.ndarray, rerankers: dict[str, CrossEncoderReranker],
    depth: int, rounds: int, data_dir: Path,
) -> dict:
    index = EmbeddedSearchIndex(directory=data_dir / f"index-{size}")
    await index.start()
    try:
        for batch in range(0, size, 1000):
            await index.upsert(chunks[batch : min(size, batch + 1000)])
        scope = SearchScope(org_id=ORG, workspace_id=WORKSPACE, user_id=USER)
        await index.search(scope, text=queries[0], vector=query_vectors[0], limit=depth)  # reads the vectors in
        measured: dict[str, list[dict]] = {"hybrid": [], **{f"hybrid + {name}": [] for name in rerankers}}
        for _ in range(rounds):
            latencies: dict[str, list[float]] = {label: [] for label in measured}
            for query, vector in zip(queries, query_vectors):
                for label in measured:  # query by query, each way in turn: load moves them together
                    started = time.perf_counter()
                    hits = await index.search(scope, text=query, vector=vector, limit=depth)
                    if label != "hybrid":
                        reranker = rerankers[label.removeprefix("hybrid + ")]
                        reranked(hits, await reranker.score(query, [reranking_text(hit) for hit in hits]))
                    latencies[label].append((time.perf_counter() - started) * 1000)
            for label, values in latencies.items():
                measured[label].append(summary(values))
        return {"chunks": size, "depth": depth, "rounds": measured, "summary": {label: spread(rounds_) for label, rounds_ in measured.items()}}
    finally:
        await index.close()


async def run(arguments: argparse.Namespace) -> dict:
    sentences = corpus_sentences()
    largest = max(arguments.sizes, default=0)
    texts = chunk_sized(chunk_texts(sentences, max(largest, 2_000), seed=3))
    queries = query_texts(sentences, arguments.queries, seed=5)
    with tempfile.TemporaryDirectory(prefix="turnlog-rerank-bench-") as scratch:
        paths = {name: build_twin(name, Path(scratch)) if name in TWINS else Path(name) for name in arguments.models}
        rerankers = {name: CrossEncoderReranker(path) for name, path in paths.items()}
        for reranker in rerankers.values():
            await reranker.start()
        titled = [reranking_text(chunk) for chunk in chunks_for(texts[:2_000], random_unit_vectors(2_000, 384, seed=9), seed=7)]
        cost: dict[str, dict] = {}
        for name, reranker in rerankers.items():
            await reranker.score(queries[0], titled[:8])  # warm
            for depth in arguments.depths:
                rounds = await rerank_cost(reranker, queries, titled, depth, arguments.rounds)
                cost.setdefault(name, {})[str(depth)] = {"summary": spread(rounds), "rounds": rounds}
                print(f"{name:>12}, {depth:2d} passages: {spread(rounds)}", file=sys.stderr, flush=True)

        searched = []
        if arguments.sizes:
            embedder = MiniLMEmbedder(batch_size=32)
            await embedder.start()
            real = min(1_000, largest)
            vectors = np.concatenate([await embedder.embed(texts[:real]), random_unit_vectors(largest - real, 384, seed=9)])
            query_vectors = await embedder.embed(queries)
            await embedder.close()
            chunks = chunks_for(texts[:largest], vectors, seed=7)
            for size in sorted(arguments.sizes):
                measured = await search_then_rerank(
                    size, chunks, queries, query_vectors, rerankers, arguments.index_depth, arguments.rounds, Path(scratch)
                )
                searched.append(measured)
                print(f"{size} chunks, depth {arguments.index_depth}: {measured['summary']}", file=sys.stderr, flush=True)
        for reranker in rerankers.values():
            await reranker.close()
    import torch

    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"
        f" ({torch.get_num_threads()} threads)",
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "models": {name: (f"architecture twin, seeded random weights: {TWINS[name]}" if name in TWINS else str(path))
                   for name, path in paths.items()},
        "passages": f"search-speed corpus chunks cut to {DEFAULT_MAX_TOKENS} word pieces, title above ({CHUNKS_PER_FILE} per file)",
        "queries": len(queries),
        "rerank_cost_ms": cost,
        "search_then_rerank_ms": searched,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(TWINS), help="twin names (minilm-l6, tinybert-l2) or model directories")
    parser.add_argument("--depths", type=int, nargs="+", default=[8, 16, 24], help="passages reranked per query")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000], help="index sizes for part two; none: skip it")
    parser.add_argument("--index-depth", type=int, default=16, help="passages reranked per query in part two")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    add_blas_threads_option(parser)
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    blas_threads = use_blas_threads(arguments)
    result = asyncio.run(run(arguments))
    result["blas_threads"] = blas_threads
    write_results(result, arguments.out, name="rerank_cost")


if __name__ == "__main__":
    main()
