"""Search index fixtures: the real MiniLM model (loaded once per session), the adapters under test.

The embedded index runs for real on a fresh directory per test. The Elasticsearch adapter runs
against `recording_elasticsearch.py`, a real HTTP server that answers its calls coherently but
does not rank (no Elasticsearch server installs here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import load_test_module

from projections.search.elasticsearch import ElasticsearchIndex
from projections.search.embedded import EmbeddedSearchIndex


recording_elasticsearch = load_test_module("recording_elasticsearch", beside=Path(__file__))


@pytest.fixture
async def embedded_index(tmp_path: Path) -> AsyncIterator[EmbeddedSearchIndex]:
    index = EmbeddedSearchIndex(directory=tmp_path / "search")
    await index.start()
    try:
        yield index
    finally:
        await index.close()


@pytest.fixture
async def recording_server() -> AsyncIterator:
    server = recording_elasticsearch.RecordingElasticsearch()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(params=["rrf_retriever", "client"])
async def elasticsearch_index(request: pytest.FixtureRequest, recording_server) -> AsyncIterator[ElasticsearchIndex]:
    index = ElasticsearchIndex(hosts=recording_server.url, fusion=request.param, replicas=0)
    await index.start()
    try:
        yield index
    finally:
        await index.close()
