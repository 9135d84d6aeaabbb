"""The safety tests' shared pieces: the offline classifiers, loaded once (Presidio's import takes seconds), and a
real judge server on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from processors.safety.pii import PiiClassifier
from processors.safety.profanity import ProfanityClassifier
from tests.conftest import load_test_module

judge_server = load_test_module("judge_server", beside=Path(__file__))


@pytest.fixture(scope="session")
def pii_classifier() -> PiiClassifier:
    return asyncio.run(PiiClassifier.load())


@pytest.fixture(scope="session")
def profanity_classifier() -> ProfanityClassifier:
    return asyncio.run(ProfanityClassifier.load())


@pytest.fixture(scope="module")
def judge() -> Iterator[judge_server.JudgeServer]:
    server = judge_server.JudgeServer()
    server.start()
    yield server
    server.stop()
