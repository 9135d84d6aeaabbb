"""The second collection's questions (`benchmarks/data/retrieval_eval_stdlib.json`) and the gate's, kept honest; no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_test_module

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# Registered by name: dataclasses look their module up there, and stdlib_docs imports retrieval_quality by name.
retrieval_quality = load_test_module("retrieval_quality", beside=BENCHMARKS / "retrieval_quality.py")
stdlib_docs = load_test_module("stdlib_docs", beside=BENCHMARKS / "stdlib_docs.py")


@pytest.fixture(scope="module")
def stdlib_set() -> dict:
    return json.loads((BENCHMARKS / "data" / "retrieval_eval_stdlib.json").read_text())


def test_every_quote_is_verbatim_in_its_module_and_in_no_other(stdlib_set: dict) -> None:
    documents = stdlib_docs.stdlib_documents()
    texts = {name: retrieval_quality.normalized_words(" ".join(block.text for block in blocks)) for name, blocks in documents.items()}
    for question in stdlib_set["questions"]:
        for passage in question["relevant"]:
            words = retrieval_quality.normalized_words(passage["quote"])
            assert [name for name, text in texts.items() if words in text] == [passage["doc"]], question["id"]


def test_the_set_has_both_styles_unique_ids_and_unanswerable_questions(stdlib_set: dict) -> None:
    questions = stdlib_set["questions"]
    assert len(questions) >= 40 and len({q["id"] for q in questions}) == len(questions)
    assert {q["style"] for q in questions} == {"paraphrase", "keyword"}
    assert len(stdlib_set["unanswerable"]) >= 15 and {u["kind"] for u in stdlib_set["unanswerable"]} == {"near", "far"}


def test_the_documents_are_the_same_bytes_every_time() -> None:
    rendered = [source.data for source in retrieval_quality.collection_files("markdown", collection="stdlib")]
    assert rendered == [source.data for source in retrieval_quality.collection_files("markdown", collection="stdlib")]
    assert not any(b" at 0x" in data for data in rendered)  # no object addresses in signatures


def test_the_documents_do_not_depend_on_what_the_process_imported_or_configured_before() -> None:
    """transformers patches `logging.Logger` with methods of its own when imported, and `logging.shutdown`'s default
    lists every handler made so far: the benchmark imports the model libraries before it ends, so neither may count."""
    import logging

    before = retrieval_quality.collection_documents("stdlib")
    import transformers.utils.logging  # noqa: F401  (its import patches `logging.Logger`)

    logging.getLogger("turnlog.tests.stdlib-docs").addHandler(logging.NullHandler())
    assert retrieval_quality.collection_documents("stdlib") == before


def test_the_gate_questions_are_unanswerable_and_small_talk_by_kind() -> None:
    gate = json.loads((BENCHMARKS / "data" / "relevance_gate_questions.json").read_text())
    assert len(gate["unanswerable"]) >= 30 and {u["kind"] for u in gate["unanswerable"]} == {"near", "far"}
    assert len(gate["small_talk"]) >= 15
