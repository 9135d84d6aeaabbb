"""The reranking stage's parts: the order it makes of scores, the text it reads, and the cross-encoder adapter on a
model saved to disk (a small seeded one, `tiny_cross_encoder`: the scores are arbitrary but the model's own)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from projections.search.index import SearchHit
from projections.search.reranking import CrossEncoderReranker, reranked, reranking_text

QUESTION = "When does the harbour gate close?"
PASSAGES = [
    "The harbour gate closes two hours before low water.",
    "Spring tides follow the full moon by about two days.",
    "The travel budget for the Lisbon offsite is twelve thousand euros.",
    "Gates of the old harbour were rebuilt in 1910.",
]


def hit(position: int, *, title: str = "Tide notes", location: str = "", text: str = "") -> SearchHit:
    return SearchHit(
        chunk_id=f"file_a:{position}", file_id="file_a", org_id="acme", workspace_id="research", owner_id="ana",
        acl="workspace", title=title, location=location, ordinal=position, text=text or f"passage {position}",
        score=1.0 / (60 + position), similarity=0.5,
    )


def test_hits_are_ordered_by_the_reranker_s_scores_each_carrying_its_own():
    hits = [hit(0), hit(1), hit(2)]
    ordered = reranked(hits, [0.1, 0.9, 0.5])
    assert [found.chunk_id for found in ordered] == ["file_a:1", "file_a:2", "file_a:0"]
    assert [found.rerank_score for found in ordered] == pytest.approx([0.9, 0.5, 0.1])
    assert [found.score for found in ordered] == [hits[1].score, hits[2].score, hits[0].score]  # the fused score stays


def test_equal_scores_keep_the_fused_order_and_last_bit_noise_is_a_tie():
    hits = [hit(0), hit(1), hit(2), hit(3)]
    ordered = reranked(hits, [0.5, 0.7, 0.5 + 1e-9, 0.7 - 1e-9])
    assert [found.chunk_id for found in ordered] == ["file_a:1", "file_a:3", "file_a:0", "file_a:2"]


def test_a_score_per_hit_or_an_error():
    with pytest.raises(ValueError, match="2 reranker scores for 3 hits"):
        reranked([hit(0), hit(1), hit(2)], [0.1, 0.2])
    assert reranked([], []) == []


def test_the_reranker_reads_title_and_location_above_the_text_as_chunks_are_embedded():
    assert reranking_text(hit(0, title="Tide notes", location="Harbour", text="It closes early.")) == (
        "Tide notes > Harbour\n\nIt closes early."
    )
    assert reranking_text(hit(0, title="Harbour rules", location="Harbour", text="x")) == "Harbour rules\n\nx"
    assert reranking_text(hit(0, title="Tide notes", location="", text="x")) == "Tide notes\n\nx"
    assert reranking_text(hit(0, title="", location="", text="x")) == "x"


def model_logits(directory: Path, question: str, passages: list[str]) -> np.ndarray:
    """The saved model's raw outputs for each pair, computed with transformers alone: the oracle for the adapter."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        inputs = tokenizer([question] * len(passages), passages, padding=True, truncation=True, return_tensors="pt")
        return model(**inputs).logits.reshape(-1).numpy()


async def test_the_cross_encoder_scores_each_pair_as_the_saved_model_does(tiny_cross_encoder):
    reranker = CrossEncoderReranker(tiny_cross_encoder)
    await reranker.start()
    try:
        scores = await reranker.score(QUESTION, PASSAGES)
        again = await reranker.score(QUESTION, PASSAGES)
        alone = await reranker.score(QUESTION, PASSAGES[2:3])
        nothing = await reranker.score(QUESTION, [])
    finally:
        await reranker.close()
    logits = model_logits(tiny_cross_encoder, QUESTION, PASSAGES)
    assert scores.dtype == np.float32 and scores.shape == (len(PASSAGES),)
    assert list(np.argsort(-scores)) == list(np.argsort(-logits))  # the model's own order (a monotone activation)
    assert len(set(scores.tolist())) == len(PASSAGES)  # distinct: the order above is not a tie broken by position
    np.testing.assert_array_equal(scores, again)
    assert alone[0] == pytest.approx(scores[2], abs=1e-5)  # a pair's score does not depend on what it is batched with
    assert nothing.shape == (0,)


async def test_a_directory_that_holds_no_model_is_refused_by_name(tmp_path):
    reranker = CrossEncoderReranker(tmp_path / "empty")
    with pytest.raises(ValueError, match="holds no config.json"):
        await reranker.start()
    with pytest.raises(RuntimeError, match="not started"):
        await reranker.score(QUESTION, PASSAGES)


async def test_a_classifier_with_two_outputs_is_not_taken_for_a_reranker(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from projections.search.embedding import load_minilm_tokenizer

    tokenizer = load_minilm_tokenizer()
    BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
        intermediate_size=32, num_labels=2,
    )).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has 2 outputs; a reranker scores a pair with one"):
        await CrossEncoderReranker(tmp_path).start()
