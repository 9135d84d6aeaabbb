"""Fixtures shared across test folders: real servers (turnlog, a Kafka broker, ClickHouse over HTTP).

The harnesses live in `tests/*.py` beside this file. With `--import-mode=importlib` the tests folder
is not on `sys.path`, so each is loaded here by file path and registered under its module name; test
modules then `import e2e_server` etc. (conftest files are imported before the modules they cover).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest


def load_test_module(name: str, *, beside: Path = Path(__file__)) -> ModuleType:
    """`<name>.py` in the folder of `beside` (default `tests/`), imported once and registered as `name`.

    Tests run with --import-mode=importlib, so helper modules are not on sys.path; conftests of
    sub-folders load theirs with this too.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, beside.with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


e2e_server = load_test_module("e2e_server")
kafka_harness = load_test_module("kafka_broker")
clickhouse_http = load_test_module("clickhouse_http")
trace_collector = load_test_module("trace_collector")
moto_aws = load_test_module("moto_aws")

# The ClickHouse test server's credentials: adapters must send them (URL-special characters included).
CLICKHOUSE_USER = "turnlog"
CLICKHOUSE_PASSWORD = "p@ss:w/rd %"


# The shared servers' upload limit: small, so a test can pass it without sending tens of MiB.
E2E_MAX_UPLOAD_MB = 1.0


def _running(request: pytest.FixtureRequest, name: str, *, token_delay_ms: float, answer_tokens: int):
    """A server on the embedded defaults, or (param "kafka") a fleet: 2 API instances + workers on Kafka."""
    base = request.getfixturevalue("tmp_path_factory").mktemp(name)
    if request.param == "embedded":
        return e2e_server.TurnlogServer(
            data_dir=base / "data", token_delay_ms=token_delay_ms, answer_tokens=answer_tokens, max_upload_mb=E2E_MAX_UPLOAD_MB
        )
    # A broker of its own per fleet: fleets must not share topics or consumer groups.
    broker = kafka_harness.TansuBroker(log_path=base / "tansu.log")
    broker.start()
    request.addfinalizer(broker.stop)
    clickhouse = request.getfixturevalue("clickhouse_server")
    asyncio.run(clickhouse.create_database(name))
    return e2e_server.TurnlogFleet(
        data_dir=base / "data",
        log_url=broker.log_url,
        store_url=clickhouse.url(name),
        token_delay_ms=token_delay_ms,
        answer_tokens=answer_tokens,
        max_upload_mb=E2E_MAX_UPLOAD_MB,
    )


@pytest.fixture(scope="session", params=["embedded", "kafka"])
def fast_server(request: pytest.FixtureRequest) -> Iterator[e2e_server.TurnlogServer]:
    """Scripted engine, 30 tokens at 10 ms each: a run takes ~0.3 s and streams several deltas."""
    server = _running(request, f"fast_{request.param}", token_delay_ms=10, answer_tokens=30)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", params=["embedded", "kafka"])
def slow_server(request: pytest.FixtureRequest) -> Iterator[e2e_server.TurnlogServer]:
    """Scripted engine, 200 tokens at 50 ms each (~10 s a run): runs stay active long enough to poke."""
    server = _running(request, f"slow_{request.param}", token_delay_ms=50, answer_tokens=200)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def embedded_log(tmp_path: Path):
    """A started embedded log in a fresh directory (the real adapter, not a double)."""
    from events.embedded import EmbeddedLog

    log = EmbeddedLog(path=tmp_path / "log.db")
    await log.start()
    try:
        yield log
    finally:
        await log.close()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[moto_aws.MotoServer]:
    """A real `moto_server` process (S3 and KMS) for the session, with dummy credentials in the environment."""
    with moto_aws.running_moto(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_harness.TansuBroker]:
    """One Tansu broker for the session (started only by tests that ask for it); tests keep apart by topic prefix."""
    broker = kafka_harness.TansuBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[clickhouse_http.ClickHouseHttpServer]:
    """One chDB engine behind ClickHouse's HTTP interface, in a process of its own, for the session."""
    server = clickhouse_http.ClickHouseHttpServer(
        data_dir=tmp_path_factory.mktemp("clickhouse") / "data",
        user=CLICKHOUSE_USER,
        password=CLICKHOUSE_PASSWORD,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def embedder():
    """all-MiniLM-L6-v2, loaded once per session (about 7 s); shared by every test that embeds."""
    from projections.search.embedding import MiniLMEmbedder  # imports torch: only when a test embeds

    model = MiniLMEmbedder(batch_size=32)
    asyncio.run(model.start())
    yield model
    asyncio.run(model.close())


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cross-encoder saved to disk as an operator saves one for `--rerank-model`: BERT with one output and MiniLM's
    tokenizer, two small layers of seeded random weights. No trained reranker ships in a package installable here
    (docs/retrieval-quality.md), so tests check that the stage ranks by whatever the model scores, not its quality."""
    from transformers import BertConfig, BertForSequenceClassification
    import torch

    from projections.search.embedding import load_minilm_tokenizer

    directory = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = load_minilm_tokenizer()
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, num_labels=1,
        initializer_range=0.5,  # BERT's 0.02 gives near-equal scores (ties at 1e-6); these are far apart
    )
    torch.manual_seed(7)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _on_kafka(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    return "kafka_broker" in getattr(item, "fixturenames", ()) or "kafka" in params


def _in_the_browser(item: pytest.Item) -> bool:
    return "tests/web/" in item.nodeid


def _runs_alone(item: pytest.Item) -> bool:
    """Run in the suite's one-at-a-time part: a Kafka fleet's consumers poll their broker all along (two workers'
    fleets would share two cores with their brokers: tests that start a broker of their own are marked `alone`), the
    browser keeps an event loop in the session's thread (see below), and other `alone` tests need the machine to
    themselves."""
    return _on_kafka(item) or _in_the_browser(item) or item.get_closest_marker("alone") is not None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """The one-at-a-time part on two workers (`make test`: `--suite-part alone -n 2`): one takes every fleet's test,
    the other the browser's, each one test at a time. The fleets mostly wait for their brokers and processes, so
    the browser tests run beside them instead of after. (By scope, not `--dist loadgroup`: on pytest 9 that mode
    no longer groups anything.)"""
    if config.getoption("--suite-part") != "alone":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FleetsBesideTheBrowser(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "browser" if "tests/web/" in nodeid else "fleets"

    return FleetsBesideTheBrowser(config, log)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--suite-part",
        choices=("shared", "alone"),
        default=None,
        help="only the tests that can share the machine with other pytest workers (`make test` runs them with -n 2),"
        " or only those that run one at a time (with -n 2, as `make test` runs them, the fleets' tests and the"
        " browser's side by side, each one at a time); default: every test, in one run",
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests on Kafka run after the others, in the order pytest gave them: a Kafka fleet, once started, lives to
    the end of the session and its idle consumers poll the broker all along, so started late it no longer slows
    the rest. The browser tests come last of all: their Playwright (sync API) keeps an event loop running in this
    thread until the session ends, and a fixture that calls `asyncio.run` after them would fail.

    `--suite-part` keeps one part of them and deselects the rest (`make test` runs both parts, one after the other)."""
    browser = [item for item in items if _in_the_browser(item)]
    others = [item for item in items if not _in_the_browser(item)]
    items[:] = [item for item in others if not _on_kafka(item)] + [item for item in others if _on_kafka(item)] + browser
    part = config.getoption("--suite-part")
    if part is not None:
        alone = part == "alone"
        config.hook.pytest_deselected(items=[item for item in items if _runs_alone(item) != alone])
        items[:] = [item for item in items if _runs_alone(item) == alone]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """A failing test on a fleet carries what the fleet's processes printed: on CI that is all there is to read."""
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():  # `fleet`, and the shared servers' Kafka fleets
            if isinstance(value, e2e_server.TurnlogFleet):
                report.sections.append((f"{name}: fleet processes", value.diagnostics()))
    return report
