"""The third collection's questions (`benchmarks/data/retrieval_eval_rustbook.json`) kept well formed; no model, no book.

The pages are the Rust book of a local Rust toolchain, which not every machine has: the benchmark itself refuses to
score a run whose pages miss a quote (`evaluate`, "misquoted"). Here: the set's shape, and which pages are read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import load_test_module

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
retrieval_quality = load_test_module("retrieval_quality", beside=BENCHMARKS / "retrieval_quality.py")


@pytest.fixture(scope="module")
def rustbook_set() -> dict:
    return json.loads(retrieval_quality.RUSTBOOK_EVAL_SET.read_text())


def test_the_set_has_sixty_questions_of_three_styles_spread_over_both_halves(rustbook_set: dict) -> None:
    questions = rustbook_set["questions"]
    assert len(questions) == 60 and len({q["id"] for q in questions}) == 60 and len({q["question"] for q in questions}) == 60
    styles = [q["style"] for q in questions]
    assert set(styles) == set(rustbook_set["styles"]) == {"paraphrase", "keyword", "two-document"}
    for style in rustbook_set["styles"]:  # development = even positions, held out = odd (the benchmark's split)
        assert styles[0::2].count(style) == styles[1::2].count(style), style


def test_every_quote_is_one_paragraph_of_seven_to_forty_words_and_two_document_questions_name_two_pages(
    rustbook_set: dict,
) -> None:
    for question in rustbook_set["questions"]:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", question["id"]), question["id"]
        for passage in question["relevant"]:
            assert passage.keys() == {"doc", "quote"}, question["id"]
            assert retrieval_quality.RUST_BOOK_PAGE.fullmatch(passage["doc"] + ".html"), question["id"]
            assert "\n" not in passage["quote"], question["id"]
            assert 7 <= len(retrieval_quality.normalized_words(passage["quote"]).split()) <= 40, question["id"]
        pages = {passage["doc"] for passage in question["relevant"]}
        assert len(pages) == (2 if question["style"] == "two-document" else 1), question["id"]


def test_unanswerable_questions_are_near_and_far_and_say_which_book_they_were_checked_against(rustbook_set: dict) -> None:
    kinds = [entry["kind"] for entry in rustbook_set["unanswerable"]]
    assert len(kinds) == 20 and set(kinds) == {"near", "far"}
    assert rustbook_set["collection"]["rustc"].startswith("rustc ")


def test_the_collection_is_the_chapters_and_appendices_not_the_pages_that_redirect(tmp_path: Path) -> None:
    page = "<!DOCTYPE html><html><head><title>{0}</title></head><body><main><p>{0}</p></main></body></html>"
    redirect = '<html><head><meta http-equiv="refresh" content="0; URL=ch18-00-oop.html"></head><body>Redirecting...</body></html>'
    for name in ("ch04-01-what-is-ownership", "appendix-00", "appendix-01-keywords", "ch18-00-oop"):
        (tmp_path / f"{name}.html").write_text(page.format(name))
    (tmp_path / "ch17-00-oop.html").write_text(redirect)  # an old chapter name
    for other in ("choosing-your-guarantees", "index", "print", "SUMMARY", "title-page"):
        (tmp_path / f"{other}.html").write_text(page.format(other))
    pages = retrieval_quality.collection_files("html", collection="rustbook", rust_book=tmp_path)
    assert [source.topic for source in pages] == ["appendix-00", "appendix-01-keywords", "ch04-01-what-is-ownership", "ch18-00-oop"]
    with pytest.raises(SystemExit, match="--format html"):
        retrieval_quality.collection_files("markdown", collection="rustbook", rust_book=tmp_path)
    with pytest.raises(SystemExit, match="no Rust book pages"):
        retrieval_quality.collection_files("html", collection="rustbook", rust_book=tmp_path / "missing")
