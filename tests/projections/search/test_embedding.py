"""The MiniLM embedder: real all-MiniLM-L6-v2 on the CPU, loaded once for the session."""

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from projections.search.embedding import MINILM_DIMENSIONS, MiniLMEmbedder, load_minilm_tokenizer


async def test_vectors_are_float32_unit_rows_in_input_order(embedder: MiniLMEmbedder) -> None:
    texts = ["The invoice is due in thirty days.", "Cats sleep most of the day.", "Reset your password in settings."]
    vectors = await embedder.embed(texts)
    assert embedder.dimensions == MINILM_DIMENSIONS == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    alone = await embedder.embed([texts[1]])
    np.testing.assert_allclose(alone[0], vectors[1], atol=1e-5)


async def test_texts_that_mean_the_same_are_closer_than_unrelated_ones(embedder: MiniLMEmbedder) -> None:
    holiday, vacation, firmware = await embedder.embed(
        ["How many days of holiday do staff get each year?", "Employees accrue 25 vacation days per calendar year.",
         "Flash the router firmware over the serial console."]
    )
    assert holiday @ vacation > 0.5 > holiday @ firmware


async def test_no_texts_no_vectors(embedder: MiniLMEmbedder) -> None:
    assert (await embedder.embed([])).shape == (0, 384)


async def test_the_event_loop_keeps_running_while_a_batch_is_embedded(embedder: MiniLMEmbedder) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await embedder.embed(["a longer paragraph about search indexes and their tenants " * 20] * 32)
    finally:
        ticker.cancel()
    assert ticks >= 3


async def test_embeds_and_token_counts_at_the_same_time_each_get_their_own_answer(embedder: MiniLMEmbedder) -> None:
    """An upload's chunks, a question and the chunker's token counts at once (a soak run failed on this:
    a fast tokenizer keeps its padding on the shared object, so concurrent calls padded to each other's lengths)."""
    batches = [[f"passage {n} " + "about tides and harbours " * (n % 7)] * (1 + n % 5) for n in range(12)]
    alone = [await embedder.embed(batch) for batch in batches]
    loop = asyncio.get_running_loop()

    def count_tokens() -> list[int]:
        return [len(embedder.tokenizer("word " * n)["input_ids"]) for n in range(1, 200)]

    together = await asyncio.gather(*(embedder.embed(batch) for batch in batches), loop.run_in_executor(None, count_tokens))
    for vectors, expected in zip(together, alone):
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert together[-1] == [n + 2 for n in range(1, 200)]


def test_the_tokenizer_is_the_model_s_own(embedder: MiniLMEmbedder) -> None:
    tokenizer = load_minilm_tokenizer()
    text = "Tokenisation counts word pieces: unbelievably, 42 of them."
    assert tokenizer(text)["input_ids"] == embedder.tokenizer(text)["input_ids"]
    assert tokenizer.tokenize("Tokenisation counts word pieces") == ["token", "##isation", "counts", "word", "pieces"]
    assert embedder.max_tokens == 256


async def test_an_embedder_that_is_not_started_refuses() -> None:
    with pytest.raises(RuntimeError):
        await MiniLMEmbedder().embed(["text"])


@pytest.fixture(scope="module")
def default_torch_embedder() -> Iterator[MiniLMEmbedder]:
    """A second torch model with the default batch size (16; the session's shared one embeds 32 at a time)."""
    model = MiniLMEmbedder()
    asyncio.run(model.start())
    yield model
    asyncio.run(model.close())


TEXTS_OF_MANY_LENGTHS = [f"passage {n}: " + "tides and harbours, ships and their cargo " * (n % 23) for n in range(70)]


async def test_the_batch_size_does_not_change_the_vectors(default_torch_embedder: MiniLMEmbedder, embedder: MiniLMEmbedder) -> None:
    """The default batch size (16) is a matter of speed only: vectors match those of batches of 32 (the session's model)."""
    np.testing.assert_allclose(await default_torch_embedder.embed(TEXTS_OF_MANY_LENGTHS), await embedder.embed(TEXTS_OF_MANY_LENGTHS),
                               atol=2e-5)
