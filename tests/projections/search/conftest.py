"""Search index fixtures: the real MiniLM model (loaded once per session), the adapters under test.

The embedded index runs for real on a fresh directory per test. The Elasticsearch adapter runs
against `recording_elasticsearch.py`, a real HTTP server that answers its calls coherently but
does not rank (no Elasticsearch server installs here).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from projections.search.elasticsearch import ElasticsearchIndex
from projections.search.embedded import EmbeddedSearchIndex


def _load_beside(name: str):
    """`<name>.py` from this folder (tests are not on sys.path under --import-mode=importlib)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


recording_elasticsearch = _load_beside("recording_elasticsearch")


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
