"""Configuration of one turnlog process: where its data lives, which adapters and roles it runs.

Every option can also come from the environment (`--log` is `TURNLOG_LOG`, `--run-lease-s` is
`TURNLOG_RUN_LEASE_S`, ...), which is how `docker-compose.yml` configures its containers; a command-line
flag wins over the environment, and `turnlog <command> --help` names each option's variable.
"""

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from processors.relevance import DEFAULT_MIN_SIMILARITY
from projections.search.reranking import DEFAULT_RERANK_DEPTH
from projections.search.embedding import DEFAULT_EMBED_BATCH_SIZE

if TYPE_CHECKING:
    from api.oidc import OidcConfig

# The conversations whose state the decider, the prompt builder and the summarizer each keep, unless
# `--cached-conversations` says: a conversation not kept is read back from the log when it is next used, an indexed
# read on the embedded log (milliseconds: one machine's recently active conversations are plenty) and a scan of the
# key's partition from the conversation's creation on Kafka (worth more memory). The byte budgets bind too.
CACHED_CONVERSATIONS_EMBEDDED = 1_000
CACHED_CONVERSATIONS_KAFKA = 10_000

# The processes a deployment can split: every role runs in `turnlog serve` unless told otherwise.
PROCESSOR_ROLES = ("decider", "prompt-builder", "projector", "inference", "watchdog", "ingester", "tools", "governance")
# Roles that search documents (and so open the search index and, on first use, the embedding model).
SEARCH_ROLES = ("ingester", "prompt-builder")
# auto: faust-streaming agents on Kafka, the log's own consumer groups on the embedded log.
PROCESSOR_RUNTIMES = ("auto", "faust", "native")


@dataclass(frozen=True, kw_only=True)
class Settings:
    data_dir: Path = Path(".turnlog")
    log_url: str | None = None  # default: sqlite:///<data_dir>/log.db
    store_url: str | None = None  # default: chdb:///<data_dir>/read-models
    blobs_url: str | None = None  # default: file:///<data_dir>/blobs
    search_url: str | None = None  # default: embedded:///<data_dir>/search
    keys_url: str | None = None  # the data keys content is sealed with (docs/encryption.md); default: file:///<data_dir>/keys
    max_upload_mb: float = 25.0
    instance_id: str | None = None  # Kafka: names this process's transactional producer, stable across restarts
    roles: tuple[str, ...] = PROCESSOR_ROLES
    processor_runtime: str = "auto"
    engine: str = "cpu"  # cpu | scripted | sglang | openai-compatible
    engine_url: str | None = None  # openai-compatible: the server's API root, e.g. http://sglang:30000/v1
    engine_model: str | None = None  # sglang: the model path; openai-compatible: the served model name
    engine_tool_parser: str | None = None  # sglang: SGLang's function-call parser for the model (tools on)
    engine_api_key: str | None = None  # openai-compatible, optional: sent as a bearer token
    engine_concurrency: int | None = None  # sglang, openai-compatible: generations at once (default: the engine's, 64 / 16)
    pools_file: Path | None = None  # the inference pools (TOML); None: one pool, "interactive", on `engine`
    tools_file: Path | None = None  # the tools the model may call (TOML: MCP servers and policies); None: no tools
    tiers_file: Path | None = None  # credits, budgets, rate limits, abuse (TOML, docs/governance.md); None: governance off
    policies_file: Path | None = None  # the safety stages' policies per org (TOML, docs/safety.md); None: no safety checks
    judge_url: str | None = None  # the safety policies' llm_judge: an OpenAI-compatible API root serving a Llama Guard model
    judge_model: str | None = None  # its served model name
    judge_api_key: str | None = None  # optional: sent as a bearer token
    inference_pools: tuple[str, ...] = ()  # the pools this process's inference role serves; empty: all
    token_delay_ms: float = 0.0  # scripted engine only
    answer_tokens: int = 20  # scripted engine only
    max_output_tokens: int = 256
    context_tokens: int = 8_192  # the engine's context window: prompts are budgeted against it
    source_tokens: int = 1_500  # retrieved passages' share of a prompt (processors/grounding.py)
    max_sources: int = 8  # passages a prompt carries at most
    cached_conversations: int | None = None  # None: by the log (`conversations_to_cache`)
    embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE  # texts per forward pass of the embedding model (projections/search/embedding.py)
    # The relevance gate's bar, a cosine, for a question all of whose words the passages contain; each word they lack
    # raises it (processors/relevance.py, docs/retrieval-quality.md).
    relevance_threshold: float = DEFAULT_MIN_SIMILARITY
    # A cross-encoder saved to disk that reorders each search's best `rerank_depth` hits (projections/search/reranking.py);
    # None: no reranking stage (no such model ships with turnlog).
    rerank_model: Path | None = None
    rerank_depth: int = DEFAULT_RERANK_DEPTH
    run_lease_s: float = 30.0
    run_events_retention_s: float = 7 * 24 * 3600.0  # deltas and heartbeats older than this are trimmed (0: never)
    trim_interval_s: float = 300.0  # how often the embedded log's owner trims them
    heartbeat_s: float = 5.0
    host: str = "127.0.0.1"
    port: int = 8000
    metrics_port: int | None = None  # `turnlog worker`: where it answers /healthz, /readyz and /metrics; None: nowhere
    metrics_host: str = "127.0.0.1"  # the address that port listens on
    max_token_ttl_s: int = 30 * 24 * 3600  # `turnlog serve`: the longest `exp - iat` a bearer token may have
    oidc: "OidcConfig | None" = None  # `turnlog serve`: an OIDC provider whose tokens are accepted too; None: turnlog's only

    def __post_init__(self) -> None:
        unknown = set(self.roles) - set(PROCESSOR_ROLES)
        if unknown:
            raise ValueError(f"--role: unknown role(s) {sorted(unknown)}; roles are {', '.join(PROCESSOR_ROLES)}")
        if self.processor_runtime not in PROCESSOR_RUNTIMES:
            choices = ", ".join(PROCESSOR_RUNTIMES)
            raise ValueError(f"--processor-runtime: unknown runtime {self.processor_runtime!r}; choose {choices}")
        if self.engine_concurrency is not None and self.engine_concurrency < 1:
            raise ValueError(f"--engine-concurrency must be >= 1, got {self.engine_concurrency}")
        if not self.max_upload_mb > 0:
            raise ValueError(f"--max-upload-mb must be a positive number of MiB, got {self.max_upload_mb}")
        if self.rerank_model is not None and not (self.rerank_model / "config.json").is_file():
            raise ValueError(
                f"--rerank-model: {self.rerank_model} is not a model directory (no config.json in it): save a"
                " sentence-transformers cross-encoder there, e.g. with CrossEncoder(name).save(DIR)"
            )
        if self.processor_runtime == "faust" and url_scheme(self.log) != "kafka":
            raise ValueError("--processor-runtime faust needs a Kafka log (--log kafka://host:9092)")

    @property
    def runs_on_faust(self) -> bool:
        """Whether the decider, prompt builder and projector run as faust agents."""
        if self.processor_runtime == "auto":
            return url_scheme(self.log) == "kafka"
        return self.processor_runtime == "faust"

    @property
    def conversations_to_cache(self) -> int:
        """The conversations whose state the decider, the prompt builder and the summarizer each keep."""
        if self.cached_conversations is not None:
            return self.cached_conversations
        return CACHED_CONVERSATIONS_KAFKA if url_scheme(self.log) == "kafka" else CACHED_CONVERSATIONS_EMBEDDED

    @property
    def snapshots_conversations(self) -> bool:
        """Whether the decider, the prompt builder and the summarizer load a conversation they have not cached from
        the store (commands/snapshots.py, processors/transcript_turns.py): on a log without an index by key (Kafka),
        where its history is a scan of its partition. The embedded log reads a key's records through an index, and
        the store's answer would cost more than it saves."""
        return url_scheme(self.log) == "kafka"

    @property
    def loads_from_store(self) -> bool:
        """Whether a role of this process loads state kept beside the log from the read-model store: the governance
        decider (with a tiers file), and on Kafka the decider, the prompt builder and the summarizer."""
        return ("governance" in self.roles and self.tiers_file is not None) or (
            bool({"decider", "prompt-builder"} & set(self.roles)) and self.snapshots_conversations
        )

    @property
    def worker_opens_store(self) -> bool:
        """Whether a worker process (`turnlog worker`) opens the read-model store: the projector writes it, and the
        loaders read there where the store is a server (an embedded store is one process's). Other workers never
        open it (nor need its extra)."""
        return "projector" in self.roles or (self.loads_from_store and url_scheme(self.store) != "chdb")

    @property
    def log(self) -> str:
        return self.log_url or f"sqlite://{(self.data_dir / 'log.db').resolve()}"

    @property
    def store(self) -> str:
        return self.store_url or f"chdb://{(self.data_dir / 'read-models').resolve()}"

    @property
    def blobs(self) -> str:
        return self.blobs_url or f"file://{(self.data_dir / 'blobs').resolve()}"

    @property
    def search(self) -> str:
        return self.search_url or f"embedded://{(self.data_dir / 'search').resolve()}"

    @property
    def keys(self) -> str:
        return self.keys_url or f"file://{(self.data_dir / 'keys').resolve()}"

    @property
    def run_events_retention(self) -> timedelta | None:
        """How long run events' deltas and heartbeats are kept (None: forever)."""
        return timedelta(seconds=self.run_events_retention_s) if self.run_events_retention_s > 0 else None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def checks_safety(self) -> bool:
        """Whether this process runs safety stages: a policies file, and a role that checks (`tools` only with tools)."""
        roles = set(self.roles)
        checking = bool({"prompt-builder", "inference"} & roles) or ("tools" in roles and self.tools_file is not None)
        return self.policies_file is not None and checking

    @property
    def searches(self) -> bool:
        """Whether this process runs a role that needs the search index and the embedder."""
        return bool(set(self.roles) & set(SEARCH_ROLES))

    @property
    def answers_queries(self) -> bool:
        """Whether its roles search for questions (a run's retrieval, the tools role's `file_search`), not only write
        the index: such a process loads the reranking model, where one is configured."""
        return "prompt-builder" in self.roles or ("tools" in self.roles and self.tools_file is not None)


def url_scheme(url: str) -> str:
    return urlsplit(url).scheme


def url_path(url: str) -> Path:
    """The filesystem path of a `sqlite:///abs/path`, `chdb:///abs/path` or `embedded:///abs/path` URL."""
    path = urlsplit(url).path
    if not path:
        raise ValueError(f"{url!r} names no path")
    return Path(path)
