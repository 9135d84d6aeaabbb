"""The composition root: builds every adapter from settings and runs the roles a process is given."""

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

from api.auth import load_or_create_secret
from api.context import ApiContext, Governance, Limits
from api.edge import EdgeLimiter
from api.oidc import OidcVerifier
from commands.bus import CommandBus
from commands.governance.bus import GovernanceBus
from commands.governance.tiers_file import GovernanceConfig
from commands.governance.violations import GovernanceViolations, IgnoredViolations, ViolationReporter
from commands.handler import CommandHandler
from events.blobs import BlobStore
from kernel.codec import AvroCodec
from kernel.log import EventLog
from inference.engine import InferenceEngine
from inference.pools import PoolConfig
from inference.worker import InferenceWorker
from processors.ingestion.chunking import Tokenizer
from processors.prompting import PromptBuilder, PromptPolicy
from processors.relevance import RelevanceGate
from processors.retrieval import DocumentRetriever
from processors.pool_health import follow_pool_outcomes
from processors.summarizer import Summarizer
from processors.summaries import SummaryPolicy
from kernel.runtime import run_processor
from processors.watchdog import RunWatchdog
from projections.api_keys import ApiKeyView
from projections.fence import ReadYourWritesFence
from projections.projector import READ_MODELS_GROUP, ReadModelProjector
from projections.read_models import ReadModels
from projections.ledger_erasure import LedgerEraser, WithoutErased
from processors.transcript_turns import TranscriptTurns, TranscriptTurnWriter
from projections.transcript_turns import TranscriptTurnRows
from projections.conversation_snapshots import (
    CONVERSATION_SNAPSHOTS_GROUP, conversation_snapshot_writer, conversation_snapshots,
)
from projections.governance_snapshots import GovernanceSnapshots, governance_snapshot_writer
from projections.run_charges import ChargeLedger
from projections.run_ledger import RunLedger
from projections.safety_decisions import SafetyLedger
from projections.tool_calls import ToolCallLedger
from projections.usage_ledger import UsageLedger
from projections.search.embedding import Embedder
from projections.search.index import SearchIndex
from projections.search.reranking import CrossEncoderReranker, Reranker
from turnlog.adapters import build_safety_classifiers, load_policies
from turnlog.adapters import build_key_store
from events.sealed_blobs import SealingBlobStore
from turnlog.adapters import build_tool_executor, load_tiers, load_tools, load_pools, build_blob_store, build_codec, build_engine, build_log, build_prompt_tokenizer, build_search_index, build_store
from processors.tools.attached_files import AttachedFiles
from processors.tools.builtin import tool_policies
from processors.tools.catalog import ToolExecutor
from processors.tools.offered import ToolCatalog
from processors.tools.loop import LoopBudget
from processors.tools.orchestrator import ToolLoop
from processors.tools.runner import ToolRunner
from processors.safety.checks import SafetyChecks
from processors.safety.stages import SafetyStages
from turnlog.settings import Settings, url_scheme
from turnlog.telemetry import default_service_name, traced_process
from turnlog.readiness import process_readiness
from kernel.metrics import ROLE_UP, register_collector, sample_consumer_lag, unregister_collector
from inference.metrics import BreakerStates
from processors.watchdog import WATCHDOG_GROUP
from events.topics import RUN_EVENTS
from events.embedded import EmbeddedLog
from events.retention import RunEventTrimmer
import api.metrics  # noqa: F401 - every layer's metrics are declared in every process (docs/observability.md)
import processors.metrics  # noqa: F401

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Search:
    """The search plane of a process: the index, and the embedding model and tokenizer (both loaded on first use).

    Hand `index` and `embedder` to whatever searches (the prompt builder's retrieval): chunks and
    queries must be embedded by the same model.
    """

    index: SearchIndex
    embedder: Embedder
    tokenizer: Tokenizer
    reranker: Reranker | None = None  # `--rerank-model`: loaded when the search plane opens, so a bad model fails the start


def document_retriever(search: Search, settings: Settings) -> DocumentRetriever:
    """Searches as runs, the `file_search` tool and `POST /v1/search` do, behind the configured relevance gate."""
    return DocumentRetriever(
        index=search.index, embedder=search.embedder, gate=RelevanceGate(min_similarity=settings.relevance_threshold),
        reranker=search.reranker, rerank_depth=settings.rerank_depth,
    )


@asynccontextmanager
async def opened_search(settings: Settings, *, answers_queries: bool) -> AsyncIterator[Search]:
    """The search plane; with `answers_queries` (runs, the `file_search` tool, the search API) the reranking model too,
    where one is configured: an ingester or a rebuild only writes the index and never loads it."""
    from processors.ingestion.chunking import load_embedding_tokenizer
    from turnlog.on_demand import OnDemandEmbedder, OnDemandTokenizer

    index = build_search_index(settings)
    await index.start()
    embedder = OnDemandEmbedder(batch_size=settings.embed_batch_size)
    await embedder.start()
    reranks = answers_queries and settings.rerank_model is not None
    reranker = CrossEncoderReranker(settings.rerank_model) if reranks else None
    try:
        if reranker is not None:
            await reranker.start()
        yield Search(index=index, embedder=embedder, tokenizer=OnDemandTokenizer(load_embedding_tokenizer), reranker=reranker)
    finally:
        if reranker is not None:
            await reranker.close()
        await embedder.close()
        await index.close()


@asynccontextmanager
async def searching_for_api(settings: Settings, search: Search | None) -> AsyncIterator[Search]:
    """What `POST /v1/search` reads: the process's own search plane, or one opened for the API alone
    (an API-only process: the index is opened, the embedding model loads on the first search; or roles that only
    write the index, where a reranking model is configured)."""
    if search is not None and (search.reranker is not None or settings.rerank_model is None):
        yield search
        return
    async with opened_search(settings, answers_queries=True) as opened:
        yield opened


@asynccontextmanager
async def opened_blobs(settings: Settings) -> AsyncIterator[BlobStore]:
    # An owner's uploads are sealed under their data key; plaintext blobs from before still read (docs/encryption.md).
    blobs = SealingBlobStore(inner=build_blob_store(settings.blobs), keys=build_key_store(settings))
    await blobs.start()
    try:
        yield blobs
    finally:
        await blobs.close()


@dataclass(frozen=True, kw_only=True)
class Tools:
    """The tools of a process whose settings name a tools file: what each caller may use, and how calls run."""

    catalog: ToolCatalog
    executor: ToolExecutor
    budget: LoopBudget


@asynccontextmanager
async def opened_tools(
    settings: Settings,
    *,
    search: Search | None = None,
    blobs: BlobStore | None = None,
    read_models: ReadModels | None = None,
    violations: ViolationReporter | None = None,
) -> AsyncIterator[Tools | None]:
    """The tools file's tools, and `file_search` as a tool where the process searches documents (`search`);
    `code_interpreter` keeps the files it writes in `blobs`, reads attached files through `read_models` and
    reports escape attempts to `violations`."""
    config = load_tools(settings)
    if config is None:
        yield None
        return
    retriever = document_retriever(search, settings) if search is not None else None
    files = AttachedFiles(read_models=read_models, blobs=blobs) if read_models is not None and blobs is not None else None
    executor = build_tool_executor(config, retriever=retriever, blobs=blobs, files=files, violations=violations)
    await executor.start()
    try:
        policies = tool_policies(config, searches=retriever is not None)
        yield Tools(catalog=ToolCatalog(executor=executor, policies=policies), executor=executor, budget=config.budget)
    finally:
        await executor.close()


@asynccontextmanager
async def opened_safety(settings: Settings) -> AsyncIterator[SafetyStages]:
    """The safety stages of a process whose settings name a policies file: the classifiers it runs, loaded once, now.

    The LLM judge (when a policy runs it) is built twice: asked about a user's words for the input, context and
    tool stages, about an assistant's answer for the output stage.
    """
    import httpx

    policies = load_policies(settings)
    assert policies is not None
    names = policies.classifier_names()
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
        classifiers = await build_safety_classifiers(settings, names, client=client)
        judge = {"llm_judge"} & set(names)
        answers = await build_safety_classifiers(settings, judge, client=client, judge_role="assistant") if judge else {}
        stages = SafetyStages(
            checks=SafetyChecks(policies=policies, classifiers=classifiers),
            output_checks=SafetyChecks(policies=policies, classifiers={**classifiers, **answers}) if answers else None,
        )
        logger.info(
            "safety policies %s (version %s): classifiers %s loaded in %.1f s", settings.policies_file, policies.version,
            ", ".join(names) or "none", time.monotonic() - started,
        )
        yield stages


@dataclass(frozen=True, kw_only=True)
class Roles:
    """What a process runs, once started; `projector` is set when it projects in-process, `search` when a role searches."""

    tasks: tuple[asyncio.Task, ...]
    projector: ReadModelProjector | None
    search: Search | None = None


# Called with a role task's name and its exception (None: it returned) when it stops on its own.
RoleStopped = Callable[[str, BaseException | None], None]


@asynccontextmanager
async def running_roles(
    settings: Settings,
    *,
    log: EventLog,
    codec: AvroCodec,
    read_models: ReadModels | None,
    blobs: BlobStore | None = None,
    on_role_stopped: RoleStopped | None = None,
) -> AsyncIterator[Roles]:
    """Start this process's roles on an open log and store (and blob store, for the ingester); stop them on exit.

    A role task that stops by itself (it raised, or returned) is logged as an error and reported to `on_role_stopped`:
    the process cannot go on without it.
    """
    async with AsyncExitStack() as stack:
        uses_tools = {"prompt-builder", "tools"} & set(settings.roles)
        # The tools role runs `file_search` for the model: with a tools file, it searches too.
        searches = settings.searches or bool(uses_tools and settings.tools_file is not None)
        search = (
            await stack.enter_async_context(opened_search(settings, answers_queries=settings.answers_queries))
            if searches else None
        )
        if "tools" in settings.roles and settings.tools_file is not None and blobs is None:
            # whole results that were cut for the prompt, and files the code interpreter writes, are kept there
            blobs = await stack.enter_async_context(opened_blobs(settings))
        # Flagged inputs and sandbox escapes are the user's violations (docs/governance.md, "Abuse").
        violations = violation_reporter(settings, log=log, codec=codec)
        tools = (
            await stack.enter_async_context(
                opened_tools(settings, search=search, blobs=blobs, read_models=read_models, violations=violations)
            )
            if uses_tools else None
        )
        safety = await stack.enter_async_context(opened_safety(settings)) if settings.checks_safety else None
        tasks: list[asyncio.Task] = []
        projector = None
        lag_groups: dict[str, tuple[str, ...]] = {}  # the consumer groups this process runs, for the lag metric
        stopping: list[bool] = []  # set once the roles are being stopped: what ends then has not crashed
        indexing: list[asyncio.Task] = []  # the blob owner index's one sweep of older blobs (ingester role)

        def run(processor) -> object:
            lag_groups[processor.group] = tuple(processor.topics)
            if settings.runs_on_faust:
                from processors.faust_runtime import run_processor_on_faust  # imports faust: only when used

                return run_processor_on_faust(processor, log=log, codec=codec, data_dir=settings.data_dir)
            return run_processor(processor, log=log, codec=codec)

        def spawn(coroutine, name: str) -> None:
            task = asyncio.create_task(coroutine, name=name)
            ROLE_UP.labels(role=name).set(1)
            task.add_done_callback(lambda task: _report_stop(task, None if stopping else on_role_stopped))
            tasks.append(task)

        # The loaders' reads of the state kept beside the log ride the POST's and the first token's paths: a client
        # of their own, so they never queue behind the projector's inserts (chDB is one process's engine: shared).
        loads = None
        if read_models is not None and settings.loads_from_store:
            loads = read_models.store if url_scheme(settings.store) == "chdb" else build_store(settings)
            if loads is not read_models.store:
                stack.push_async_callback(loads.close)
        if "decider" in settings.roles:
            conversations = (
                conversation_snapshots(loads) if settings.snapshots_conversations and loads is not None else None
            )
            decider = CommandHandler(
                log=log, codec=codec, capacity=settings.conversations_to_cache, snapshots=conversations
            )
            spawn(run(decider.processor()), "decider")
        if "prompt-builder" in settings.roles:
            # The prompt builder and the summarizer share the prompt's budget and tokenizer: one role.
            pools = load_pools(settings)
            tokenizer = await asyncio.to_thread(build_prompt_tokenizer, pools.pools[0])
            summary_policy = SummaryPolicy()
            # On Kafka a transcript the builder and the summarizer have not cached loads from the store's turns.
            transcripts = (
                TranscriptTurns(loads) if settings.snapshots_conversations and loads is not None else None
            )
            assert search is not None
            builder = PromptBuilder(
                log=log,
                codec=codec,
                policy=PromptPolicy(
                    max_output_tokens=settings.max_output_tokens, context_tokens=settings.context_tokens,
                    max_source_tokens=settings.source_tokens, max_sources=settings.max_sources,
                ),
                tokenizer=tokenizer,
                retriever=document_retriever(search, settings),
                pools=pools,
                tools=tools.catalog if tools else None,
                safety=safety,
                violations=violations,
                cached_conversations=settings.conversations_to_cache,
                summary_policy=summary_policy,
                transcripts=transcripts,
            )
            spawn(run(builder.processor()), "prompt-builder")
            spawn(builder.follow_summaries(), "newest-summaries")
            breakers = BreakerStates(builder.health, tuple(pool.name for pool in pools.pools))
            register_collector(breakers)
            stack.callback(unregister_collector, breakers)
            spawn(follow_pool_outcomes(log=log, codec=codec, health=builder.health, clock=time.monotonic), "pool-health")
            summarizer = Summarizer(
                log=log, codec=codec, tokenizer=tokenizer, policy=summary_policy,
                cached_conversations=settings.conversations_to_cache, transcripts=transcripts,
            )
            spawn(run(summarizer.processor()), "summarizer")
        if "projector" in settings.roles:
            assert read_models is not None, "the projector role writes read models: open them"
            projector = ReadModelProjector(log=log, codec=codec, read_models=read_models)
            spawn(run(projector.processor()), "projector")
            # The ledgers write through a store that leaves out erased subjects' rows; the eraser deletes theirs.
            ledgers = WithoutErased(read_models.store, build_key_store(settings))
            spawn(run(LedgerEraser(read_models.store).processor()), "ledger-eraser")
            spawn(run(UsageLedger(ledgers).processor()), "usage-ledger")
            if settings.tools_file is not None:  # without tools, no run-events for it to read
                spawn(run(ToolCallLedger(ledgers).processor()), "tool-call-ledger")
            if settings.policies_file is not None:  # without policies, no decisions for it to read
                spawn(run(SafetyLedger(ledgers).processor()), "safety-ledger")
            # Routes, manifests and timings of every run, and (with a tiers file) what each run was charged.
            spawn(run(RunLedger(ledgers).processor()), "run-ledger")
            spawn(run(ChargeLedger(ledgers).processor()), "charge-ledger")
            if settings.tiers_file is not None:  # without one, governance writes nothing
                writer = governance_snapshot_writer(store=read_models.store, log=log)
                spawn(run(writer.processor()), "governance-snapshots")
            if settings.snapshots_conversations:  # what the decider, the prompt builder and the summarizer load from
                turns = TranscriptTurnWriter(
                    store=read_models.store, writes=ledgers, log=log, group=CONVERSATION_SNAPSHOTS_GROUP
                )
                writer = conversation_snapshot_writer(store=read_models.store, writes=ledgers, log=log, also=turns.write)
                spawn(run(writer.processor()), "conversation-snapshots")
        if "inference" in settings.roles:
            for pool, engine in _pool_engines(settings):
                await engine.start()
                stack.push_async_callback(engine.close)
                worker = InferenceWorker(
                    log=log, codec=codec, engine=engine, pool=pool, heartbeat_s=settings.heartbeat_s, output_safety=safety
                )
                spawn(worker.run(), f"inference-worker-{pool.name}")
                lag_groups.update(worker.lag_groups())
        if "tools" in settings.roles and tools is not None:
            # The loop decides (one state per run, in log order); runners execute, apart from inference workers.
            loop = ToolLoop(log=log, codec=codec, rules_for=tools.catalog.rules, budget=tools.budget, safety=safety)
            spawn(run(loop.processor()), "tool-loop")
            spawn(loop.run_ticks(), "tool-loop-ticks")
            runner = ToolRunner(log=log, codec=codec, executor=tools.executor, catalog=tools.catalog, blobs=blobs)
            stack.push_async_callback(runner.close)
            spawn(run(runner.processor()), "tool-runners")
        if "watchdog" in settings.roles:
            spawn(RunWatchdog(log=log, codec=codec, lease_s=settings.run_lease_s).run(), "watchdog")
            lag_groups[WATCHDOG_GROUP] = (RUN_EVENTS,)
        if "governance" in settings.roles and settings.tiers_file is not None:
            from processors.governance import GovernanceDecider
            from processors.settlement import SettlementRouter

            # Without a tiers file nothing is asked of governance: the role has nothing to do. With the read-model
            # store an org loads from its snapshot, else from its whole history (commands/governance/snapshots.py).
            snapshots = GovernanceSnapshots(loads) if loads is not None else None
            governance = GovernanceDecider(
                log=log, codec=codec, config=_governance_config(settings), snapshots=snapshots
            )
            spawn(run(governance.processor()), "governance")
            spawn(run(SettlementRouter(log=log, codec=codec).processor()), "settlement")
        if "ingester" in settings.roles:
            from processors.ingestion.blob_erasure import BlobEraser
            from processors.ingestion.ingester import Ingester

            assert search is not None
            if blobs is None:
                blobs = await stack.enter_async_context(opened_blobs(settings))
            ingester = Ingester(
                log=log, codec=codec, blobs=blobs, index=search.index, embedder=search.embedder, tokenizer=search.tokenizer
            )
            spawn(run(ingester.processor()), "ingester")
            if isinstance(blobs, SealingBlobStore):  # every process's store seals (opened_blobs)
                eraser = BlobEraser(blobs)
                spawn(run(eraser.processor()), "blob-eraser")
                indexing.append(asyncio.create_task(eraser.index_existing(), name="blob-owner-index"))
        # Not a role: the consumer-lag metric of the groups above, sampled while they run.
        sampler = asyncio.create_task(sample_consumer_lag(log, lag_groups), name="consumer-lag")
        background = [sampler, *indexing, *_trimming(settings, log=log, codec=codec)]
        try:
            yield Roles(tasks=tuple(tasks), projector=projector, search=search)
        finally:
            stopping.append(True)
            for task in (*background, *tasks):
                task.cancel()
            await asyncio.gather(*background, *tasks, return_exceptions=True)


def _trimming(settings: Settings, *, log: EventLog, codec: AvroCodec) -> list[asyncio.Task]:
    """The embedded log's owner trims its expired run events (events/retention.py); Kafka's brokers do their own."""
    if not isinstance(log, EmbeddedLog) or settings.run_events_retention is None:
        return []
    trimmer = RunEventTrimmer(log=log, codec=codec, retention=settings.run_events_retention)
    interval = timedelta(seconds=settings.trim_interval_s)
    return [asyncio.create_task(trimmer.run(interval=interval), name="run-event-trimmer")]


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
async def opened_log(settings: Settings) -> AsyncIterator[EventLog]:
    log = build_log(settings)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


@asynccontextmanager
async def opened_read_models(settings: Settings) -> AsyncIterator[ReadModels]:
    store = build_store(settings)
    try:
        read_models = ReadModels(store)
        await read_models.create_tables()
        await UsageLedger(store).create_tables()
        await ToolCallLedger(store).create_tables()
        await SafetyLedger(store).create_tables()
        await RunLedger(store).create_tables()  # after the usage ledger: its view joins usage_ledger
        await ChargeLedger(store).create_tables()
        await GovernanceSnapshots(store).create_tables()
        await conversation_snapshots(store).create_table()  # whichever log: the eraser deletes from them
        await TranscriptTurnRows(store).create_table()
        yield read_models
    finally:
        await store.close()


@asynccontextmanager
async def opened_storage(settings: Settings) -> AsyncIterator[tuple[EventLog, ReadModels]]:
    async with opened_log(settings) as log, opened_read_models(settings) as read_models:
        yield log, read_models


@asynccontextmanager
async def running_system(settings: Settings, *, on_role_stopped: RoleStopped | None = None) -> AsyncIterator[ApiContext]:
    """The API's context plus this process's roles (every role, by default); a role that stops is reported to
    `on_role_stopped` (`turnlog serve` then shuts down and exits non-zero). Spans are exported while it runs when the
    `OTEL_*` variables ask (turnlog/telemetry.py)."""
    service_name = default_service_name(settings.roles, serves_api=True)
    with traced_process(service_name=service_name, roles=("api", *settings.roles)):
        async with _running_system(settings, on_role_stopped=on_role_stopped) as context:
            yield context


@asynccontextmanager
async def _running_system(settings: Settings, *, on_role_stopped: RoleStopped | None) -> AsyncIterator[ApiContext]:
    keys = build_key_store(settings)
    codec = build_codec(keys)  # content payloads sealed under their owners' keys (docs/encryption.md)
    secret = load_or_create_secret(settings.data_dir)
    async with opened_storage(settings) as (log, read_models), opened_blobs(settings) as blobs:
        async with running_roles(
            settings, log=log, codec=codec, read_models=read_models, blobs=blobs, on_role_stopped=on_role_stopped
        ) as roles, searching_for_api(settings, roles.search) as search:
            bus = CommandBus(log=log, codec=codec)
            await bus.start()
            governance = None
            api_keys = ApiKeyView(log=log, codec=codec)  # every API key on the log, followed (docs/api-keys.md)
            # Its keys are fetched when a token first needs them: a provider down at start does not stop the server.
            oidc = OidcVerifier(settings.oidc) if settings.oidc is not None else None
            try:
                await api_keys.start()
                governance = await _opened_governance(
                    settings, log=log, codec=codec, snapshots=GovernanceSnapshots(read_models.store)
                )
                fence = roles.projector.fence if roles.projector else ReadYourWritesFence(log=log, group=READ_MODELS_GROUP)
                yield ApiContext(
                    bus=bus,
                    read_models=read_models,
                    caught_up=fence.caught_up,
                    log=log,
                    codec=codec,
                    secret=secret,
                    blobs=blobs,
                    limits=Limits(
                        max_upload_bytes=settings.max_upload_bytes, max_token_ttl_s=settings.max_token_ttl_s,
                        run_events_retention=settings.run_events_retention,
                    ),
                    governance=governance,
                    api_keys=api_keys,
                    # The API reads the read models behind the fence: it is ready while the projector keeps up.
                    readiness=process_readiness(log=log, read_models=read_models, tasks=roles.tasks, projector_lag=True),
                    oidc=oidc,
                    keys=keys,
                    search=document_retriever(search, settings),
                )
            finally:
                await api_keys.close()
                if oidc is not None:
                    await oidc.close()
                if governance is not None:
                    await governance.bus.close()
                await bus.close()


async def _opened_governance(
    settings: Settings, *, log: EventLog, codec: AvroCodec, snapshots: GovernanceSnapshots
) -> Governance | None:
    """The API's side of governance when a tiers file is given: the bus to the decider, and the edge limiter."""
    if settings.tiers_file is None:
        return None
    config = _governance_config(settings)
    bus = GovernanceBus(log=log, codec=codec, snapshots=snapshots)
    await bus.start()
    return Governance(bus=bus, config=config, edge=EdgeLimiter(requests_per_minute=config.edge.requests_per_minute))


def violation_reporter(settings: Settings, *, log: EventLog, codec: AvroCodec) -> ViolationReporter:
    """Where moderation and the sandbox report a user's violations: governance with a tiers file, nowhere without."""
    return GovernanceViolations(log=log, codec=codec) if settings.tiers_file is not None else IgnoredViolations()


def _governance_config(settings: Settings) -> GovernanceConfig:
    config = load_tiers(settings)
    assert config is not None
    unpriced = config.unpriced(pool.name for pool in load_pools(settings).pools)
    if unpriced:
        logger.warning("the tiers file prices no pool named %s and has no [prices.default]: their runs cost nothing", ", ".join(unpriced))
    return config


class RoleStoppedError(RuntimeError):
    """A role of a worker process stopped by itself: the process stops too, and exits non-zero."""


async def run_workers(settings: Settings) -> None:
    """A process of processor roles only (no API), until cancelled; with `settings.metrics_port`, its health and metrics
    are served there. A role that stops raises `RoleStoppedError`."""
    codec = build_codec(build_key_store(settings))
    async with AsyncExitStack() as stack:
        service_name = default_service_name(settings.roles, serves_api=False)
        stack.enter_context(traced_process(service_name=service_name, roles=settings.roles))
        log = await stack.enter_async_context(opened_log(settings))
        read_models = (
            await stack.enter_async_context(opened_read_models(settings)) if settings.worker_opens_store else None
        )
        roles = await stack.enter_async_context(running_roles(settings, log=log, codec=codec, read_models=read_models))
        if settings.metrics_port is not None:
            readiness = process_readiness(
                log=log, read_models=read_models, tasks=roles.tasks, projector_lag="projector" in settings.roles
            )
            await stack.enter_async_context(serving_health(readiness, host=settings.metrics_host, port=settings.metrics_port))
        if not roles.tasks:
            return
        done, _ = await asyncio.wait(roles.tasks, return_when=asyncio.FIRST_COMPLETED)
        stopped = sorted(task.get_name() for task in done)
        raise RoleStoppedError(f"role {', '.join(stopped)} stopped; the worker cannot go on without it")


@asynccontextmanager
async def serving_health(readiness, *, host: str, port: int) -> AsyncIterator[None]:
    """`/healthz`, `/readyz` and `/metrics` of a worker on `host:port`, served on this event loop while the block runs."""
    import uvicorn

    from api.health import health_app

    class _Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self):  # the worker's own handlers stop it (turnlog/cli.py); uvicorn's would only stop this
            yield

    # Bound here, so a port in use stops the worker at start with the address, not later inside uvicorn.
    listener = socket.create_server((host, port), reuse_port=False)
    server = _Server(uvicorn.Config(health_app(readiness), lifespan="off", log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[listener]), name="metrics-port")
    logger.info("health and metrics on http://%s:%d (/healthz, /readyz, /metrics)", host, port)
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        listener.close()


def _report_stop(task: asyncio.Task, on_role_stopped: RoleStopped | None) -> None:
    """A role task ended: unless it was stopped (cancelled, or while the roles were being stopped), it crashed."""
    ROLE_UP.labels(role=task.get_name()).set(0)
    if task.cancelled():
        return
    error = task.exception()
    if on_role_stopped is None:  # stopping, or nobody to tell: the traceback is still worth a line
        if error is not None:
            logger.error("role %s stopped: %r", task.get_name(), error, exc_info=error)
        return
    if error is not None:
        logger.error("role %s stopped: %r; this process cannot go on without it", task.get_name(), error, exc_info=error)
    else:
        logger.error("role %s stopped: it returned; this process cannot go on without it", task.get_name())
    on_role_stopped(task.get_name(), error)
