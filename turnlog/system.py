"""The composition root: builds every adapter from settings and runs the roles a process is given."""

import asyncio
import logging
import os
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace

from api.auth import load_or_create_secret
from api.context import ApiContext, Limits
from commands.bus import CommandBus
from commands.catalog import COMMAND_TYPES
from commands.handler import CommandHandler
from events.blobs import BlobStore, build_blob_store
from events.catalog import EVENT_TYPES
from events.codec import AvroCodec
from events.embedded import EmbeddedLog
from events.log import EventLog
from inference.engine import InferenceEngine
from inference.pools import PoolConfig, PoolsConfig, default_pools, parse_pools
from inference.worker import InferenceWorker
from processors.ingestion.chunking import Tokenizer
from inference.tokenizers import HuggingFaceTokenizer, PromptTokenizer, WordTokenizer
from processors.prompting import PromptBuilder, PromptPolicy
from processors.retrieval import DocumentRetriever
from processors.pool_health import follow_pool_outcomes
from processors.summarizer import Summarizer
from processors.runtime import run_processor
from processors.watchdog import RunWatchdog
from projections.fence import ReadYourWritesFence
from projections.projector import READ_MODELS_GROUP, ReadModelProjector
from projections.read_models import ReadModels
from projections.usage_ledger import UsageLedger
from projections.search.embedding import Embedder
from projections.search.index import SearchIndex
from projections.store import SqlStore
from turnlog.settings import Settings, url_path, url_scheme

logger = logging.getLogger(__name__)


def build_codec() -> AvroCodec:
    return AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES))


def build_log(settings: Settings) -> EventLog:
    match url_scheme(settings.log):
        case "sqlite":
            return EmbeddedLog(path=url_path(settings.log))
        case "kafka":
            from events.kafka import KafkaLog
            from events.topology import turnlog_topics

            url = urlsplit(settings.log)
            if not url.netloc:
                raise ValueError(f"{settings.log!r} names no broker; use kafka://host:9092[,host2:9092]")
            # Query parameters are librdkafka consumer settings, e.g. ?fetch.wait.max.ms=10
            consumer_config = dict(parse_qsl(url.query, strict_parsing=bool(url.query)))
            return KafkaLog(url.netloc, topics=turnlog_topics(), consumer_config=consumer_config)
    raise ValueError(f"unsupported log URL {settings.log!r}; use sqlite:///path or kafka://host:9092")


def build_store(settings: Settings) -> SqlStore:
    match url_scheme(settings.store):
        case "chdb":
            from projections.chdb import ChdbStore  # the embedded engine: loaded only when used

            return ChdbStore(str(url_path(settings.store)))
        case "clickhouse" | "clickhouses":
            from projections.clickhouse import ClickHouseStore

            return ClickHouseStore(settings.store)
    raise ValueError(
        f"unsupported read-model store URL {settings.store!r}; use chdb:///path or clickhouse://user:password@host:8123/db"
    )


def build_search_index(settings: Settings) -> SearchIndex:
    """`embedded:///path` (SQLite FTS5 + exact vectors), or Elasticsearch: `elasticsearch://host:9200` / `http(s)://...`.

    Elasticsearch URLs take `?shards=&replicas=&fusion=rrf_retriever|client&alias=` (`fusion=client`
    fuses in turnlog, for clusters without the licence the `rrf` retriever needs).
    """
    url = urlsplit(settings.search)
    match url.scheme:
        case "embedded":
            from projections.search.embedded import EmbeddedSearchIndex

            return EmbeddedSearchIndex(directory=url_path(settings.search))
        case "elasticsearch" | "http" | "https":
            from projections.search.elasticsearch import ElasticsearchIndex

            if not url.netloc:
                raise ValueError(f"{settings.search!r} names no host; use elasticsearch://host:9200")
            options = dict(parse_qsl(url.query, strict_parsing=bool(url.query)))
            unknown = set(options) - {"shards", "replicas", "fusion", "alias"}
            if unknown:
                raise ValueError(f"unknown search URL option(s) {sorted(unknown)}; options are alias, fusion, replicas, shards")
            scheme = "http" if url.scheme == "elasticsearch" else url.scheme
            extra = {name: int(options[name]) for name in ("shards", "replicas") if name in options}
            if "alias" in options:
                extra["alias"] = options["alias"]
            return ElasticsearchIndex(
                hosts=f"{scheme}://{url.netloc}{url.path.rstrip('/')}", fusion=options.get("fusion", "rrf_retriever"), **extra
            )
    raise ValueError(
        f"unsupported search URL {settings.search!r}; use embedded:///path or elasticsearch://host:9200 (http(s)://host:9200)"
    )


@dataclass(frozen=True, kw_only=True)
class Search:
    """The search plane of a process: the index, and the embedding model and tokenizer (both loaded on first use).

    Hand `index` and `embedder` to whatever searches (the prompt builder's retrieval): chunks and
    queries must be embedded by the same model.
    """

    index: SearchIndex
    embedder: Embedder
    tokenizer: Tokenizer


@asynccontextmanager
async def opened_search(settings: Settings) -> AsyncIterator[Search]:
    from processors.ingestion.chunking import load_embedding_tokenizer
    from turnlog.on_demand import OnDemandEmbedder, OnDemandTokenizer

    index = build_search_index(settings)
    await index.start()
    embedder = OnDemandEmbedder()
    await embedder.start()
    try:
        yield Search(index=index, embedder=embedder, tokenizer=OnDemandTokenizer(load_embedding_tokenizer))
    finally:
        await embedder.close()
        await index.close()


@asynccontextmanager
async def opened_blobs(settings: Settings) -> AsyncIterator[BlobStore]:
    blobs = build_blob_store(settings.blobs)
    await blobs.start()
    try:
        yield blobs
    finally:
        await blobs.close()


def load_pools(settings: Settings) -> PoolsConfig:
    """The pools runs are routed over: the pools file's, or one pool, "interactive", on the `--engine` given."""
    if settings.pools_file is not None:
        try:
            text = settings.pools_file.read_bytes()
        except OSError as error:
            raise ValueError(f"cannot read the pools file {str(settings.pools_file)!r}: {error.strerror}") from None
        pools = parse_pools(text, source=str(settings.pools_file))
    else:
        pools = default_pools(
            engine=settings.engine, engine_url=settings.engine_url, engine_model=settings.engine_model,
            context_tokens=settings.context_tokens,
        )
    unknown = [name for name in settings.inference_pools if name not in {pool.name for pool in pools.pools}]
    if unknown:
        raise ValueError(f"--inference-pools names no pool {unknown}; pools are {', '.join(pool.name for pool in pools.pools)}")
    return pools


def build_prompt_tokenizer(pool: PoolConfig) -> PromptTokenizer:
    """The pool's engine's own tokenizer, so prompts are budgeted as the engine will count them."""
    if pool.engine == "scripted":
        return WordTokenizer()
    if pool.engine == "cpu":
        return HuggingFaceTokenizer.smollm2()
    if pool.engine_model and Path(pool.engine_model).is_dir():
        return HuggingFaceTokenizer.from_directory(pool.engine_model)
    logger.warning(
        "no local tokenizer for model %r: prompts are budgeted by words, a rough count; pass a model directory",
        pool.engine_model,
    )
    return WordTokenizer()


def build_engine(settings: Settings, pool: PoolConfig | None = None) -> InferenceEngine:
    """The engine of `pool` (a pools file's), or of the `--engine` settings when there is no pools file."""
    kind = pool.engine if pool else settings.engine
    model = pool.engine_model if pool else settings.engine_model
    url = pool.engine_url if pool else settings.engine_url
    if pool is None:
        api_key = settings.engine_api_key
    else:  # a pool's key comes from the variable it names, never from another pool's settings
        api_key = os.environ.get(pool.engine_api_key_env) if pool.engine_api_key_env else None
    # As many generations (connections) at once as the pool admits, so no admitted run waits for one.
    concurrency = {"max_concurrency": pool.capacity} if pool else (
        {"max_concurrency": settings.engine_concurrency} if settings.engine_concurrency else {}
    )
    if kind == "scripted":
        from inference.scripted import ScriptedEngine

        return ScriptedEngine(token_delay_s=settings.token_delay_ms / 1000, answer_tokens=settings.answer_tokens)
    if kind == "cpu":
        from inference.cpu import CpuEngine  # imports torch: only when asked for

        return CpuEngine()
    if kind == "sglang":
        from inference.sglang import SglangEngine  # imports sglang only when started

        if not model:
            raise ValueError("the sglang engine needs --engine-model (a model path, e.g. Qwen/Qwen2.5-0.5B-Instruct)")
        return SglangEngine(model_path=model, **concurrency)
    if kind == "openai-compatible":
        from inference.openai_compatible import OpenAICompatibleEngine

        if not url or not model:
            raise ValueError("the openai-compatible engine needs --engine-url and --engine-model")
        return OpenAICompatibleEngine(base_url=url, model=model, api_key=api_key, **concurrency)
    raise ValueError(f"unknown engine {kind!r}; choose cpu, scripted, sglang or openai-compatible")


@dataclass(frozen=True, kw_only=True)
class Roles:
    """What a process runs, once started; `projector` is set when it projects in-process, `search` when a role searches."""

    tasks: tuple[asyncio.Task, ...]
    projector: ReadModelProjector | None
    search: Search | None = None


@asynccontextmanager
async def running_roles(
    settings: Settings,
    *,
    log: EventLog,
    codec: AvroCodec,
    read_models: ReadModels,
    blobs: BlobStore | None = None,
) -> AsyncIterator[Roles]:
    """Start this process's roles on an open log and store (and blob store, for the ingester); stop them on exit."""
    async with AsyncExitStack() as stack:
        search = await stack.enter_async_context(opened_search(settings)) if settings.searches else None
        tasks: list[asyncio.Task] = []
        projector = None

        def run(processor) -> object:
            if settings.runs_on_faust:
                from processors.faust_runtime import run_processor_on_faust  # imports faust: only when used

                return run_processor_on_faust(processor, log=log, codec=codec)
            return run_processor(processor, log=log, codec=codec)

        def spawn(coroutine, name: str) -> None:
            task = asyncio.create_task(coroutine, name=name)
            task.add_done_callback(_report_crash)
            tasks.append(task)

        if "decider" in settings.roles:
            spawn(run(CommandHandler(log=log, codec=codec).processor()), "decider")
        if "prompt-builder" in settings.roles:
            # The prompt builder and the summarizer share the prompt's budget and tokenizer: one role.
            pools = load_pools(settings)
            tokenizer = await asyncio.to_thread(build_prompt_tokenizer, pools.pools[0])
            assert search is not None
            builder = PromptBuilder(
                log=log,
                codec=codec,
                policy=PromptPolicy(max_output_tokens=settings.max_output_tokens, context_tokens=settings.context_tokens),
                tokenizer=tokenizer,
                retriever=DocumentRetriever(index=search.index, embedder=search.embedder),
                pools=pools,
            )
            spawn(run(builder.processor()), "prompt-builder")
            spawn(follow_pool_outcomes(log=log, codec=codec, health=builder.health, clock=time.monotonic), "pool-health")
            spawn(run(Summarizer(log=log, codec=codec, tokenizer=tokenizer).processor()), "summarizer")
        if "projector" in settings.roles:
            projector = ReadModelProjector(log=log, codec=codec, read_models=read_models)
            spawn(run(projector.processor()), "projector")
            spawn(run(UsageLedger(read_models.store).processor()), "usage-ledger")
        if "inference" in settings.roles:
            for pool, engine in _pool_engines(settings):
                await engine.start()
                stack.push_async_callback(engine.close)
                worker = InferenceWorker(log=log, codec=codec, engine=engine, pool=pool, heartbeat_s=settings.heartbeat_s)
                spawn(worker.run(), f"inference-worker-{pool.name}")
        if "watchdog" in settings.roles:
            spawn(RunWatchdog(log=log, codec=codec, lease_s=settings.run_lease_s).run(), "watchdog")
        if "ingester" in settings.roles:
            from processors.ingestion.ingester import Ingester

            assert search is not None
            if blobs is None:
                blobs = await stack.enter_async_context(opened_blobs(settings))
            ingester = Ingester(
                log=log, codec=codec, blobs=blobs, index=search.index, embedder=search.embedder, tokenizer=search.tokenizer
            )
            spawn(run(ingester.processor()), "ingester")
        try:
            yield Roles(tasks=tuple(tasks), projector=projector, search=search)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _pool_engines(settings: Settings) -> list[tuple[PoolConfig, InferenceEngine]]:
    """The pools this process serves, each with its engine."""
    if settings.pools_file is None:
        # One pool on the --engine given, with as many slots as that engine runs at once.
        engine = build_engine(settings)
        [pool] = load_pools(settings).pools
        return [(replace(pool, capacity=engine.max_concurrency), engine)]
    served = [pool for pool in load_pools(settings).pools if not settings.inference_pools or pool.name in settings.inference_pools]
    return [(pool, build_engine(settings, pool)) for pool in served]


@asynccontextmanager
async def opened_storage(settings: Settings) -> AsyncIterator[tuple[EventLog, ReadModels]]:
    log = build_log(settings)
    await log.start()
    try:
        store = build_store(settings)
        try:
            read_models = ReadModels(store)
            await read_models.create_tables()
            await UsageLedger(store).create_tables()
            yield log, read_models
        finally:
            await store.close()
    finally:
        await log.close()


@asynccontextmanager
async def running_system(settings: Settings) -> AsyncIterator[ApiContext]:
    """The API's context plus this process's roles (every role, by default)."""
    codec = build_codec()
    secret = load_or_create_secret(settings.data_dir)
    async with opened_storage(settings) as (log, read_models), opened_blobs(settings) as blobs:
        async with running_roles(settings, log=log, codec=codec, read_models=read_models, blobs=blobs) as roles:
            bus = CommandBus(log=log, codec=codec)
            await bus.start()
            try:
                fence = roles.projector.fence if roles.projector else ReadYourWritesFence(log=log, group=READ_MODELS_GROUP)
                yield ApiContext(
                    bus=bus,
                    read_models=read_models,
                    caught_up=fence.caught_up,
                    log=log,
                    codec=codec,
                    secret=secret,
                    blobs=blobs,
                    limits=Limits(max_upload_bytes=settings.max_upload_bytes),
                )
            finally:
                await bus.close()


async def run_workers(settings: Settings) -> None:
    """A process of processor roles only (no API), until cancelled."""
    codec = build_codec()
    async with opened_storage(settings) as (log, read_models):
        async with running_roles(settings, log=log, codec=codec, read_models=read_models) as roles:
            await asyncio.gather(*roles.tasks)


def _report_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception())
