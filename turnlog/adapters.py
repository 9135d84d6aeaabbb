"""Adapter factories: each port's adapter is chosen by a URL (or an engine name) in the settings.

Built at start-up, never at import time; an adapter's third-party client is imported only when its
URL asks for it, so a deployment installs only the extras it uses.
"""

import logging
import os
import tomllib
from collections.abc import Collection
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx

from commands.catalog import COMMAND_TYPES, SEALED_COMMAND_TYPES
from commands.governance.tiers_file import GovernanceConfig, TiersFileError, parse_tiers_file
from commands.governance.violations import ViolationReporter
from events.blobs import BlobStore, DirectoryBlobStore
from events.catalog import EVENT_TYPES
from events.embedded import EmbeddedLog
from events.key_files import KeyFileStore
from events.sealed_content import SEALED_EVENT_TYPES
from inference.engine import InferenceEngine
from inference.pools import PoolConfig, PoolsConfig, TenantTiers, default_pools, parse_pools
from inference.tokenizers import HuggingFaceTokenizer, PromptTokenizer, WordTokenizer
from kernel.codec import AvroCodec
from kernel.key_store import KeyStore
from kernel.sealed_payloads import PayloadSealing
from kernel.log import EventLog
from projections.search.index import SearchIndex
from projections.store import SqlStore
from processors.retrieval import DocumentRetriever
from processors.tools.attached_files import AttachedFiles
from processors.tools.builtin import with_builtin_tools
from processors.tools.catalog import ToolExecutor
from processors.safety.classifiers import Classifier
from processors.safety.policies import SafetyPolicies, parse_policies_file
from processors.tools.tools_file import ToolsConfig, parse_tools_file
from turnlog.settings import Settings, url_path, url_scheme

logger = logging.getLogger(__name__)


def build_codec(keys: KeyStore | None = None) -> AvroCodec:
    """The codec of every message; with `keys`, content payloads are sealed and opened (docs/encryption.md).

    Without keys it reads and writes plaintext only: a sealed payload is undecodable to it.
    """
    sealing = PayloadSealing(keys=keys, sealed_types=(*SEALED_EVENT_TYPES, *SEALED_COMMAND_TYPES)) if keys else None
    return AvroCodec(payload_types=(*EVENT_TYPES, *COMMAND_TYPES), sealing=sealing)


def build_key_store(settings: Settings) -> KeyStore:
    """The data keys: `file:///path` (key files, the default `<data dir>/keys`) or `kms:<key id>` (key files
    wrapped by an AWS KMS key, events/kms_keys.py)."""
    parts = urlsplit(settings.keys)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return KeyFileStore(root=Path(unquote(parts.path)))
    if parts.scheme == "kms":
        from events.kms_keys import kms_key_store, parse_kms_url

        return kms_key_store(parse_kms_url(settings.keys, default_directory=settings.data_dir / "keys"))
    raise ValueError(f"unsupported key store URL {settings.keys!r}; use file:///path or kms:<KMS key id, alias or ARN>")


def build_log(settings: Settings) -> EventLog:
    match url_scheme(settings.log):
        case "sqlite":
            return EmbeddedLog(path=url_path(settings.log))
        case "kafka":
            from events.kafka.log import KafkaLog
            from events.topology import turnlog_topics

            url = urlsplit(settings.log)
            if not url.netloc:
                raise ValueError(f"{settings.log!r} names no broker; use kafka://host:9092[,host2:9092]")
            # Query parameters are librdkafka consumer settings, e.g. ?fetch.wait.max.ms=10
            consumer_config = dict(parse_qsl(url.query, strict_parsing=bool(url.query)))
            topics = turnlog_topics(run_events_retention=settings.run_events_retention)
            # A stable name lets a restarted process fence its crashed predecessor and end the transaction it left
            # open (Kafka would wait transaction.timeout.ms, Tansu waits for ever), and end the group memberships it
            # left before joining (else the join is split with a dead member until its session runs out): docs/kafka.md.
            return KafkaLog(
                url.netloc, topics=topics, consumer_config=consumer_config, instance_id=settings.instance_id or None
            )
    raise ValueError(f"unsupported log URL {settings.log!r}; use sqlite:///path or kafka://host:9092")


def load_store_engine(settings: Settings) -> None:
    """Start the embedded store's engine now, before the caller starts threads: importing chDB swaps HOME for a
    moment to size the engine's thread pool (projections/chdb.py), and the environment is best changed alone."""
    if url_scheme(settings.store) == "chdb":
        import projections.chdb  # noqa: F401


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


def build_blob_store(url: str) -> BlobStore:
    """The adapter a URL names: `file:///abs/path` or a plain directory path (embedded), or `s3://bucket/prefix?...`."""
    parts = urlsplit(url)
    match parts.scheme:
        case "":
            if not url:
                raise ValueError("the blob store URL is empty; use file:///path, a directory, or s3://bucket/prefix")
            return DirectoryBlobStore(root=Path(url))
        case "file":
            if parts.netloc not in ("", "localhost") or not parts.path or parts.query or parts.fragment:
                raise ValueError(f"a file blob store URL is file:///absolute/path, got {url!r}")
            return DirectoryBlobStore(root=Path(unquote(parts.path)))
        case "s3":
            from events.s3_blobs import S3BlobStore, parse_s3_url  # boto3 loads only where S3 is the store

            return S3BlobStore(location=parse_s3_url(url))
    raise ValueError(f"unsupported blob store URL {url!r}; use file:///path, a directory, or s3://bucket/prefix")


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
        tool_parser = pool.engine_tool_parser if pool else settings.engine_tool_parser
        return SglangEngine(model_path=model, tool_call_parser=tool_parser, **concurrency)
    if kind == "openai-compatible":
        from inference.openai_compatible import OpenAICompatibleEngine

        if not url or not model:
            raise ValueError("the openai-compatible engine needs --engine-url and --engine-model")
        return OpenAICompatibleEngine(base_url=url, model=model, api_key=api_key, **concurrency)
    raise ValueError(f"unknown engine {kind!r}; choose cpu, scripted, sglang or openai-compatible")


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


def load_tools(settings: Settings) -> ToolsConfig | None:
    """The tools file's servers and policies, or None without one; a bad file is a ValueError naming its line."""
    if settings.tools_file is None:
        return None
    try:
        text = settings.tools_file.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the tools file {str(settings.tools_file)!r}: {error.strerror}") from None
    return parse_tools_file(text, source=str(settings.tools_file))


def load_tiers(settings: Settings) -> GovernanceConfig | None:
    """The tiers file's governance, or None without one (governance off); a bad file is a ValueError naming its line."""
    if settings.tiers_file is None:
        return None
    try:
        text = settings.tiers_file.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the tiers file {str(settings.tiers_file)!r}: {error.strerror}") from None
    config = parse_tiers_file(text, source=str(settings.tiers_file))
    return _with_pools_tenants(config, tiers_text=text, settings=settings)


def _with_pools_tenants(config: GovernanceConfig, *, tiers_text: bytes, settings: Settings) -> GovernanceConfig:
    """One org-to-tier table for routing and governance: the tiers file's [tenants], else the pools file's.

    Two tables that disagree would route an org as one tier and limit it as another, so naming tenants in both
    files is an error unless they say the same."""
    pools_tenants = load_pools(settings).tenants if settings.pools_file is not None else TenantTiers()
    if pools_tenants == TenantTiers():
        return config
    tiers_source, pools_source = str(settings.tiers_file), str(settings.pools_file)
    if "tenants" in tomllib.loads(tiers_text.decode("utf-8")):
        if (dict(config.orgs), config.default_tier) != (dict(pools_tenants.orgs), pools_tenants.default_tier):
            raise ValueError(
                f"{pools_source} and {tiers_source} both have a [tenants] table and they differ: name each org's tier"
                f" in one of them (the other reads it), or make them the same"
            )
        return config
    try:
        return config.with_tenants(pools_tenants.orgs, default_tier=pools_tenants.default_tier)
    except TiersFileError as error:
        raise ValueError(f"{pools_source}: [tenants] {error.field}: {error.problem} in {tiers_source}") from None


# The classifiers a policies file may name (docs/safety.md); `llm_judge` needs --judge-url and --judge-model.
SAFETY_CLASSIFIERS = ("pii", "profanity", "injection", "llm_judge")


def load_policies(settings: Settings) -> SafetyPolicies | None:
    """The safety policies file's policies, or None without one (no safety checks); a bad file is a ValueError naming its line.

    A process whose roles run the checks also needs the judge set up when a policy runs `llm_judge`.
    """
    if settings.policies_file is None:
        return None
    try:
        text = settings.policies_file.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the policies file {str(settings.policies_file)!r}: {error.strerror}") from None
    policies = parse_policies_file(text, source=str(settings.policies_file), known_classifiers=SAFETY_CLASSIFIERS)
    # The API and the projector only read decisions: no judge to ask.
    if settings.checks_safety and "llm_judge" in policies.classifier_names() and not (settings.judge_url and settings.judge_model):
        raise ValueError(
            f"the policies file {str(settings.policies_file)!r} runs llm_judge: give it a Llama Guard model to ask"
            " (--judge-url http://host:8000/v1 --judge-model NAME)"
        )
    return policies


async def build_safety_classifiers(
    settings: Settings, names: Collection[str], *, client: httpx.AsyncClient, judge_role: str = "user"
) -> dict[str, Classifier]:
    """The classifiers `names` (those a policies file runs), loaded off the event loop; the judge asks `settings.judge_url`."""
    classifiers: dict[str, Classifier] = {}
    if "pii" in names:
        from processors.safety.pii import PiiClassifier  # imports Presidio and spaCy: only when a policy runs it

        classifiers["pii"] = await PiiClassifier.load()
    if "profanity" in names:
        from processors.safety.profanity import ProfanityClassifier

        classifiers["profanity"] = await ProfanityClassifier.load()
    if "injection" in names:
        from processors.safety.injection import InjectionClassifier

        classifiers["injection"] = InjectionClassifier()
    if "llm_judge" in names:
        from processors.safety.llm_judge import LlmJudgeClassifier

        assert settings.judge_url and settings.judge_model, "load_policies checks the judge is set up"
        classifiers["llm_judge"] = LlmJudgeClassifier(
            client=client, base_url=settings.judge_url, model=settings.judge_model, api_key=settings.judge_api_key,
            role="assistant" if judge_role == "assistant" else "user",
        )
    return classifiers


def build_tool_executor(
    config: ToolsConfig,
    *,
    retriever: DocumentRetriever | None = None,
    blobs: BlobStore | None = None,
    files: AttachedFiles | None = None,
    violations: ViolationReporter | None = None,
) -> ToolExecutor:
    """The executor of the tools file's tools: MCP servers, over Streamable HTTP or stdio, and turnlog's own:
    `file_search` where the process has a document search (`retriever`), `web_search` on SearXNG and
    `code_interpreter` in its sandbox where the file enables them (its escape attempts go to `violations`)."""
    from processors.tools.mcp import McpToolExecutor  # imports the MCP SDK: only where tools are declared

    web_search = None
    if config.web_search is not None:
        from processors.tools.web.searxng import SearxngSearch

        web_search = SearxngSearch(base_url=config.web_search.searxng_url, timeout_s=config.web_search.search_timeout_s)
    servers = McpToolExecutor(config=config.served())
    return with_builtin_tools(
        config, servers=servers, retriever=retriever, web_search=web_search, blobs=blobs, files=files, violations=violations
    )
