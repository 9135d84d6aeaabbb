"""The local search service (SearXNG's JSON API and the pages it finds, on loopback) for `web_search`'s tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def _load(name: str):
    """`<name>.py` beside this file, imported once (tests run with --import-mode=importlib: not on sys.path)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


local_search_service = _load("local_search_service")


@pytest.fixture(scope="session")
def search_service() -> Iterator["local_search_service.LocalSearchService"]:
    service = local_search_service.LocalSearchService.start()
    try:
        yield service
    finally:
        service.stop()
