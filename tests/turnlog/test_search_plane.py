"""The search plane a process opens: the reranking model is loaded where questions are searched, and nowhere else."""

from __future__ import annotations

from projections.search.reranking import CrossEncoderReranker
from turnlog.settings import Settings
from turnlog.system import opened_search, searching_for_api


async def test_the_reranking_model_loads_only_where_questions_are_answered(tmp_path, tiny_cross_encoder) -> None:
    settings = Settings(data_dir=tmp_path, rerank_model=tiny_cross_encoder)
    async with opened_search(settings, answers_queries=True) as answering:
        assert isinstance(answering.reranker, CrossEncoderReranker)
        assert (await answering.reranker.score("When does the gate close?", ["At dawn.", "Never."])).shape == (2,)
    async with opened_search(settings, answers_queries=False) as writing:  # an ingester, a rebuild
        assert writing.reranker is None
        async with searching_for_api(settings, writing) as for_the_api:  # the API in that process opens its own
            assert for_the_api is not writing and isinstance(for_the_api.reranker, CrossEncoderReranker)


async def test_without_a_reranking_model_the_api_shares_the_process_s_search_plane(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    async with opened_search(settings, answers_queries=True) as plane:
        assert plane.reranker is None
        async with searching_for_api(settings, plane) as for_the_api:
            assert for_the_api is plane
