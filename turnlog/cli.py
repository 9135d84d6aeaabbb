"""The `turnlog` command: serve, worker, token, replay, credits, keys, erase, reseal, sql; each option also reads its `TURNLOG_*` variable."""

import argparse
import asyncio
import importlib.metadata
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from turnlog.allocator import limit_malloc_arenas
from turnlog.blas_threads import limit_blas_threads
from turnlog.adapters import load_policies, load_pools, load_store_engine, load_tiers, load_tools
from turnlog.credits import add_credits_parser, run_credits
from turnlog.erase import add_erase_parser, run_erase
from turnlog.reseal import add_reseal_parser, run_reseal
from turnlog.keys import add_keys_parser, run_keys
from turnlog.limits import add_connection_options, add_max_token_ttl_option, connection_limits
from turnlog.oidc import add_oidc_options, oidc_config
from turnlog.sql import add_sql_parser, run_sql
from turnlog.extras import Requirement, missing_extras, required_extras
from turnlog.options import CommandParser, instance_id_option, integer_option, number_option
from turnlog.settings import (
    CACHED_CONVERSATIONS_EMBEDDED,
    CACHED_CONVERSATIONS_KAFKA,
    PROCESSOR_ROLES,
    PROCESSOR_RUNTIMES,
    Settings,
)
from processors.relevance import DEFAULT_MIN_SIMILARITY, DEFAULT_UNMATCHED_PENALTY
from projections.search.reranking import DEFAULT_RERANK_DEPTH
from projections.search.embedding import DEFAULT_EMBED_BATCH_SIZE
from turnlog.logs import LOG_FORMATS
from turnlog.web import origins_option, with_sign_in_link

ENGINES = ("cpu", "scripted", "sglang", "openai-compatible")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
PROJECTIONS = ("read-models", "search")


def _version() -> str:
    try:
        return importlib.metadata.version("turnlog")
    except importlib.metadata.PackageNotFoundError:  # a checkout run without being installed
        return "unknown"


def _add_deployment_options(parser: CommandParser) -> None:
    """Where the data lives, which adapters hold it and how runs are generated."""
    parser.add_option(
        "--data-dir", type=Path, default=Path(".turnlog"), metavar="DIR",
        help="where the embedded log, read models, files and secret live",
    )
    parser.add_option("--log", metavar="URL", help="event log URL", shown_default="sqlite:///<data-dir>/log.db")
    parser.add_option(
        "--store", metavar="URL", help="read-model store URL", shown_default="chdb:///<data-dir>/read-models"
    )
    parser.add_option(
        "--instance-id", type=instance_id_option, metavar="NAME", shown_default="none, a new one per start",
        help="Kafka: this process's stable name in the fleet, unique per process ({hostname} is the host's name):"
        " restarted, it fences its crashed predecessor and ends the transaction that one left open (docs/kafka.md)",
    )
    _add_document_options(parser)
    parser.add_option(
        "--max-upload-mb", type=number_option(above=0), default=25.0, metavar="MIB",
        help="the largest file an upload may be, in MiB",
    )
    parser.add_option("--engine", choices=ENGINES, default="cpu", help="what generates answers")
    parser.add_option("--engine-url", metavar="URL", help="openai-compatible engine: the server's API root")
    parser.add_option(
        "--engine-model", metavar="MODEL", help="sglang: model path; openai-compatible: served model name"
    )
    parser.add_option(
        "--engine-tool-parser", metavar="NAME",
        help="sglang: SGLang's function-call parser for the model's format (qwen25, llama3, mistral, ...): tools on",
    )
    parser.add_option(
        "--engine-concurrency", type=integer_option(at_least=1), metavar="N", shown_default="the engine's, 64 / 16",
        help="sglang, openai-compatible: generations at once; a pools file sets each pool's capacity instead",
    )
    parser.add_option(
        "--pools", type=Path, metavar="FILE",
        help="a pools file (TOML, see pools.example.toml): the inference pools runs are routed over;"
        " without one, one pool on the --engine given",
    )
    parser.add_option(
        "--tools", type=Path, metavar="FILE",
        help="a tools file (TOML, see tools.example.toml): the MCP servers whose tools the model may call, and who"
        " may use which; without one, the model calls no tools",
    )
    parser.add_option(
        "--tiers", type=Path, metavar="FILE",
        help="a tiers file (TOML, see tiers.example.toml): credits, budgets, rate limits and abuse controls per org"
        " (docs/governance.md); give the API and the governance role the same file; without one nothing is limited",
    )
    parser.add_option(
        "--policies", type=Path, metavar="FILE",
        help="a safety policies file (TOML, see policies.example.toml): per org, what the input, context, tool and"
        " output stages check and do (docs/safety.md); without one nothing is checked",
    )
    parser.add_option(
        "--judge-url", metavar="URL",
        help="the policies' llm_judge: the API root of an OpenAI-compatible server with a Llama Guard model",
    )
    parser.add_option("--judge-model", metavar="MODEL", help="the policies' llm_judge: the served model name")
    parser.add_option(
        "--inference-pools", default="", shown_default="all", metavar="NAMES",
        help="the inference role serves these pools of the pools file, comma-separated",
    )
    parser.add_option(
        "--token-delay-ms", type=number_option(at_least=0), default=0.0, metavar="MS", help="scripted engine: delay per token"
    )
    parser.add_option(
        "--answer-tokens", type=integer_option(at_least=1), default=20, metavar="N", help="scripted engine: tokens per answer"
    )
    parser.add_option(
        "--max-output-tokens", type=integer_option(at_least=1), default=256, metavar="N",
        help="the most tokens one answer may have",
    )
    parser.add_option(
        "--context-tokens", type=integer_option(at_least=1), default=8192, metavar="N",
        help="the engine's context window: prompts (history, summary, passages) are budgeted against it",
    )
    parser.add_option(
        "--source-tokens", type=integer_option(at_least=1), default=1500, metavar="N",
        help="the most tokens a prompt's retrieved passages take together",
    )
    parser.add_option(
        "--cached-conversations", type=integer_option(at_least=1), metavar="N",
        shown_default=f"{CACHED_CONVERSATIONS_EMBEDDED} on the embedded log, {CACHED_CONVERSATIONS_KAFKA} on Kafka",
        help="conversations whose state the decider, the prompt builder and the summarizer each keep in memory (within"
        " byte budgets too); a conversation not kept is read back from the log when it is next used (an indexed read"
        " on the embedded log, a scan of its partition on Kafka)",
    )
    parser.add_option(
        "--max-sources", type=integer_option(at_least=1, at_most=64), default=8, metavar="N",
        help="the most passages a prompt carries (near-duplicates collapsed, distinct documents first)",
    )
    parser.add_option(
        "--relevance-threshold", type=number_option(at_least=-1.0), default=DEFAULT_MIN_SIMILARITY, metavar="COSINE",
        help="the relevance gate's bar: a search whose best passage is less similar to the question than this found"
        f" nothing (the answer says the documents do not cover it); the bar rises by {DEFAULT_UNMATCHED_PENALTY} times the share of the question's"
        " words that no passage found contains; see docs/retrieval-quality.md",
    )
    parser.add_option(
        "--rerank-model", type=Path, metavar="DIR", shown_default="none, no reranking",
        help="a cross-encoder saved to disk (sentence-transformers, one output, e.g. ms-marco-TinyBERT-L-2-v2) that"
        " reorders each document search's best --rerank-depth passages; see docs/retrieval-quality.md",
    )
    parser.add_option(
        "--rerank-depth", type=integer_option(at_least=1, at_most=50), default=DEFAULT_RERANK_DEPTH, metavar="N",
        help="how many of a search's best passages --rerank-model reorders (each costs the model a forward pass)",
    )
    parser.add_option(
        "--embed-batch-size", type=integer_option(at_least=1, at_most=1024), default=DEFAULT_EMBED_BATCH_SIZE, metavar="N",
        help="texts the embedding model reads per forward pass (uploads' chunks, questions); see docs/retrieval-quality.md",
    )
    parser.add_option(
        "--run-lease-s", type=number_option(above=0), default=30.0, metavar="SECONDS",
        help="a silent run is ended after this long",
    )
    parser.add_option(
        "--run-events-retention-s", type=number_option(at_least=0), default=7 * 24 * 3600.0, metavar="SECONDS",
        help="token deltas and heartbeats older than this are trimmed from the embedded log, and a run's stream"
        " expires (410); Kafka: retention.ms of run-events; 0 keeps them forever (docs/deploy.md)",
    )
    parser.add_option(
        "--trim-interval-s", type=number_option(above=0), default=300.0, metavar="SECONDS",
        help="how often the embedded log's owner trims expired run events",
    )
    parser.add_option(
        "--processor-runtime", choices=PROCESSOR_RUNTIMES, default="auto",
        help="auto: faust-streaming agents on a Kafka log, the log's own consumers on the embedded one",
    )
    parser.add_option("--log-level", choices=LOG_LEVELS, default="info", help="turnlog's and uvicorn's log level")
    parser.add_option(
        "--log-format", choices=LOG_FORMATS, shown_default="json, text when stderr is a terminal",
        help="json: one JSON object per line (docs/observability.md); text: for a person at a terminal",
    )


def _add_document_options(parser: CommandParser) -> None:
    parser.add_option(
        "--blobs", metavar="URL", shown_default="file:///<data-dir>/blobs",
        help="where uploaded files' bytes live: file:///path or s3://bucket/prefix?endpoint=http://host:9000",
    )
    parser.add_option(
        "--search", metavar="URL", shown_default="embedded:///<data-dir>/search",
        help="the search index: embedded:///path or elasticsearch://host:9200",
    )
    parser.add_option(
        "--keys", metavar="URL", shown_default="file:///<data-dir>/keys",
        help="the data keys content is sealed with (docs/encryption.md): file:///path, kept out of the log's backups,"
        " or kms:<KMS key id, alias or ARN>[?region=..&endpoint=..&dir=/path] for key files wrapped by an AWS KMS key",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `turnlog` parser; its commands read their `TURNLOG_*` variables when they parse."""
    parser = CommandParser(
        prog="turnlog", description="An event-sourced ChatGPT-style assistant backend.",
        epilog="Every option of a command can also be set by its TURNLOG_* variable (--run-lease-s is"
        " TURNLOG_RUN_LEASE_S); a flag wins over the environment.",
    )
    parser.add_argument("--version", action="version", version=f"turnlog {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the API and (by default) every processor role in one process",
        epilog="From the environment only, never printed: TURNLOG_SECRET (the token-signing key; default"
        " <data-dir>/secret.key), TURNLOG_ENGINE_API_KEY (the openai-compatible engine's bearer token) and"
        " TURNLOG_JUDGE_API_KEY (the safety judge's).",
    )
    serve.add_option("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_option(
        "--port", type=integer_option(at_least=0, at_most=65535), default=8000, metavar="PORT", help="the port to listen on"
    )
    serve.add_option(
        "--role", choices=["all", "api"], default="all",
        help="all: API plus every processor; api: the API alone, processors run in `turnlog worker`",
    )
    serve.add_option(
        "--cors-origins", type=origins_option, default=(), metavar="ORIGINS", shown_default="none, CORS off",
        help="other origins whose pages may call the API with bearer tokens, comma-separated, or * (docs/web.md)",
    )
    serve.add_option(
        "--access-log", choices=["on", "off"], default="on",
        help="one log line per request: method, path, route, status, duration, request id",
    )
    _add_deployment_options(serve)
    add_connection_options(serve)
    add_max_token_ttl_option(serve)
    add_oidc_options(serve)  # single sign-on: an OIDC provider's tokens too (docs/deploy.md)

    worker = commands.add_parser(
        "worker", help="run processor roles without the API",
        epilog="From the environment only, never printed: TURNLOG_ENGINE_API_KEY (the openai-compatible"
        " engine's bearer token) and TURNLOG_JUDGE_API_KEY (the safety judge's).",
    )
    worker.add_option("--role", choices=PROCESSOR_ROLES, repeated=True, required=True, help="repeat for several")
    worker.add_option(
        "--metrics-port", type=integer_option(at_least=1, at_most=65535), metavar="PORT", shown_default="none, off",
        help="serve /healthz, /readyz and /metrics (Prometheus) on this port (docs/observability.md)",
    )
    worker.add_option("--metrics-host", default="127.0.0.1", metavar="ADDRESS", help="the address the metrics port listens on")
    _add_deployment_options(worker)

    token = commands.add_parser(
        "token", help="print a bearer token that a server on the same data dir accepts",
        epilog="From the environment only, never printed: TURNLOG_SECRET (the token-signing key; default"
        " <data-dir>/secret.key).",
    )
    token.add_option("--user", required=True, metavar="USER_ID", help="the user the token names")
    token.add_option("--org", required=True, metavar="ORG_ID", help="the organisation the token names")
    token.add_option(
        "--workspace", repeated=True, required=True, metavar="WORKSPACE_ID",
        help="a workspace the token opens; repeat for several",
    )
    token.add_option(
        "--data-dir", type=Path, default=Path(".turnlog"), metavar="DIR", help="its secret.key signs the token"
    )
    token.add_option(
        "--ttl-s", type=integer_option(at_least=1), default=24 * 3600, metavar="SECONDS", help="how long the token is valid"
    )
    add_max_token_ttl_option(token)
    token.add_option(
        "--user-role", choices=["member", "admin"], default="member",
        help="admin: one of the org's administrators (usage, credits, safety decisions)",
    )

    replay = commands.add_parser("replay", help="drop and rebuild projections from the log (server stopped)")
    replay.add_option(
        "--data-dir", type=Path, default=Path(".turnlog"), metavar="DIR", help="the stopped server's data directory"
    )
    replay.add_option(
        "--projection", choices=PROJECTIONS, default="read-models",
        help="read-models: the ClickHouse tables (server stopped; the ledgers are refolded in place, docs/analytics.md);"
        " search: re-chunk and re-embed every file into a fresh index",
    )
    replay.add_option("--log", metavar="URL", help="event log URL", shown_default="sqlite:///<data-dir>/log.db")
    replay.add_option(
        "--store", metavar="URL", help="read-model store URL", shown_default="chdb:///<data-dir>/read-models"
    )
    _add_document_options(replay)

    add_credits_parser(commands)
    add_keys_parser(commands)
    add_erase_parser(commands)
    add_reseal_parser(commands)
    add_sql_parser(commands)
    return parser


def _settings(arguments: argparse.Namespace) -> Settings:
    if arguments.command == "replay":
        return Settings(
            data_dir=arguments.data_dir,
            log_url=arguments.log,
            store_url=arguments.store,
            blobs_url=arguments.blobs,
            search_url=arguments.search,
            keys_url=arguments.keys,
        )
    if arguments.command == "serve":
        roles = () if arguments.role == "api" else PROCESSOR_ROLES
    else:
        roles = tuple(dict.fromkeys(arguments.role))
    return Settings(
        data_dir=arguments.data_dir,
        log_url=arguments.log,
        store_url=arguments.store,
        blobs_url=arguments.blobs,
        search_url=arguments.search,
        keys_url=arguments.keys,
        max_upload_mb=arguments.max_upload_mb,
        instance_id=arguments.instance_id,
        roles=roles,
        processor_runtime=arguments.processor_runtime,
        engine=arguments.engine,
        engine_url=arguments.engine_url,
        engine_model=arguments.engine_model,
        engine_tool_parser=arguments.engine_tool_parser,
        # From the environment only: a flag would show in `ps`.
        engine_api_key=os.environ.get("TURNLOG_ENGINE_API_KEY") or None,
        engine_concurrency=arguments.engine_concurrency,
        pools_file=arguments.pools,
        tools_file=arguments.tools,
        tiers_file=arguments.tiers,
        policies_file=arguments.policies,
        judge_url=arguments.judge_url,
        judge_model=arguments.judge_model,
        judge_api_key=os.environ.get("TURNLOG_JUDGE_API_KEY") or None,  # from the environment only, like the engine's
        inference_pools=tuple(name.strip() for name in arguments.inference_pools.split(",") if name.strip()),
        token_delay_ms=arguments.token_delay_ms,
        answer_tokens=arguments.answer_tokens,
        max_output_tokens=arguments.max_output_tokens,
        context_tokens=arguments.context_tokens,
        source_tokens=arguments.source_tokens,
        max_sources=arguments.max_sources,
        cached_conversations=arguments.cached_conversations,
        embed_batch_size=arguments.embed_batch_size,
        relevance_threshold=arguments.relevance_threshold,
        rerank_model=arguments.rerank_model,
        rerank_depth=arguments.rerank_depth,
        run_lease_s=arguments.run_lease_s,
        heartbeat_s=min(5.0, arguments.run_lease_s / 3),
        run_events_retention_s=arguments.run_events_retention_s,
        trim_interval_s=arguments.trim_interval_s,
        host=getattr(arguments, "host", "127.0.0.1"),
        port=getattr(arguments, "port", 8000),
        metrics_port=getattr(arguments, "metrics_port", None),
        metrics_host=getattr(arguments, "metrics_host", "127.0.0.1"),
        max_token_ttl_s=getattr(arguments, "max_token_ttl_s", Settings.max_token_ttl_s),
        oidc=oidc_config(arguments) if arguments.command == "serve" else None,
    )


def _requirements(arguments: argparse.Namespace, settings: Settings) -> list[Requirement]:
    if arguments.command == "replay":  # a rebuild does the projector's work, or the ingester's
        role = "projector" if arguments.projection == "read-models" else "ingester"
        return required_extras(replace(settings, roles=(role,)), api=False)
    return required_extras(settings, api=arguments.command == "serve")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command == "token":
        return _token(arguments)
    if arguments.command == "credits":
        return run_credits(arguments)
    if arguments.command == "keys":
        return run_keys(arguments)
    if arguments.command == "erase":
        return run_erase(arguments)
    if arguments.command == "reseal":
        return run_reseal(arguments)
    if arguments.command == "sql":
        return run_sql(arguments)
    try:
        settings = _settings(arguments)
        # Before anything starts: an engine named in the settings whose extra is not installed, a bad tools, tiers or
        # policies file.
        missing = missing_extras(_requirements(arguments, settings))
        load_tools(settings)
        load_tiers(settings)
        load_policies(settings)
    except ValueError as error:  # options that are fine alone but not together, e.g. the faust runtime on SQLite
        parser.exit(2, f"turnlog {arguments.command}: error: {error}\n")
    if missing:
        parser.exit(2, "".join(f"turnlog {arguments.command}: error: {problem}\n" for problem in missing))
    match arguments.command:
        case "serve":
            return _serve(arguments, settings)
        case "worker":
            return _work(arguments, settings)
        case "replay":
            load_store_engine(settings)  # before the log starts its threads
            return asyncio.run(_replay(settings, projection=arguments.projection))
    return 2


def _serve(arguments: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app
    from api.connections import bounded_protocol
    from turnlog.system import running_system

    _configure_logging(arguments)
    limit_malloc_arenas()  # before the system starts its threads
    load_store_engine(settings)  # likewise
    limit_blas_threads()
    stopped_roles: list[str] = []
    limits = connection_limits(arguments)

    def role_stopped(name: str, error: BaseException | None) -> None:
        # The process must not serve on without one of its roles: shut down (gracefully) and exit non-zero.
        stopped_roles.append(name)
        server.should_exit = True

    # On the embedded defaults, a one-time sign-in link for the web page is printed once the system is up.
    start, sign_in_codes = with_sign_in_link(settings, lambda: running_system(settings, on_role_stopped=role_stopped))
    app = create_app(
        start, pools=load_pools(settings), cors_origins=arguments.cors_origins, sign_in_codes=sign_in_codes,
        access_log=arguments.access_log == "on",
    )
    # Open streams would hold a graceful shutdown forever; clients resume them with Last-Event-ID. uvicorn's loggers
    # write through turnlog's handler (log_config=None); the access log is turnlog's own (api/observability.py).
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level=arguments.log_level, log_config=None,
            access_log=False, timeout_graceful_shutdown=5,
            # Bounds on what each connection may send, checked before the app (api/connections.py, docs/deploy.md).
            http=bounded_protocol(limits), timeout_keep_alive=limits.keep_alive_s,
        )
    )
    server.run()
    if stopped_roles:
        logging.getLogger("turnlog.cli").error("turnlog serve stopped because role %s stopped", ", ".join(stopped_roles))
        return 1
    return 0


def _work(arguments: argparse.Namespace, settings: Settings) -> int:
    from turnlog.system import run_workers

    from turnlog.system import RoleStoppedError

    _configure_logging(arguments)
    limit_malloc_arenas()  # before the workers start their threads
    if "projector" in settings.roles:  # the only worker role that opens the store (turnlog/system.py, run_workers)
        load_store_engine(settings)  # likewise
    limit_blas_threads()
    try:
        asyncio.run(_until_signalled(run_workers(settings)))
    except RoleStoppedError as error:
        logging.getLogger("turnlog.cli").error("turnlog worker stopped: %s", error)
        return 1
    return 0


async def _until_signalled(work) -> None:
    """Run `work` until SIGTERM or SIGINT, then cancel it so every role stops cleanly."""
    import signal

    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


def _configure_logging(arguments: argparse.Namespace) -> None:
    from turnlog.logs import configure_logging

    configure_logging(arguments.log_level, log_format=arguments.log_format)


def _token(arguments: argparse.Namespace) -> int:
    from api.auth import issue_token, load_or_create_secret

    if arguments.ttl_s > arguments.max_token_ttl_s:
        print(
            f"turnlog token: error: --ttl-s {arguments.ttl_s} is longer than servers accept: at most"
            f" {arguments.max_token_ttl_s} s ({arguments.max_token_ttl_s / 86400:g} days, --max-token-ttl-s); ask for a"
            " shorter token, or raise TURNLOG_MAX_TOKEN_TTL_S for the servers and for this command alike",
            file=sys.stderr,
        )
        return 2
    try:
        secret = load_or_create_secret(arguments.data_dir)
    except ValueError as error:  # a TURNLOG_SECRET or secret.key too short to sign with; neither is printed
        print(f"turnlog token: error: {error}", file=sys.stderr)
        return 2
    try:
        token = issue_token(
            secret, user_id=arguments.user, org_id=arguments.org, workspace_ids=arguments.workspace,
            ttl_s=arguments.ttl_s, role=arguments.user_role, max_ttl_s=arguments.max_token_ttl_s,
        )
    except ValueError as error:  # an id the server would refuse (`user_id 'a b' must be 1-64 characters ...`)
        print(f"turnlog token: error: {error}", file=sys.stderr)
        return 2
    print(token)
    return 0


async def _replay(settings: Settings, *, projection: str) -> int:
    from events.embedded import DataDirectoryBusy
    from projections.ledger_erasure import WithoutErased
    from projections.ledger_replay import refold_ledgers
    from processors.snapshot_replay import rebuild_snapshots
    from projections.projector import rebuild
    from turnlog.adapters import build_codec, build_key_store
    from turnlog.system import opened_storage

    if projection == "search":
        try:
            return await _replay_search(settings)
        except DataDirectoryBusy:
            print(f"turnlog replay: a server is running on {settings.data_dir}; stop it first", file=sys.stderr)
            return 1
    try:
        async with opened_storage(settings) as (log, live):
            keys = build_key_store(settings)
            codec = build_codec(keys)  # sealed events open with the data dir's keys
            replayed = await rebuild(log=log, codec=codec, live=live, fresh=live.sibling("__rebuild"))
            snapshot = await live.snapshot()
            # In place (see the module), leaving out erased subjects' rows: their usage and charges are not sealed.
            refolded = await refold_ledgers(log=log, codec=codec, store=WithoutErased(live.store, keys))
            # Emptied and filled again: a snapshot table that lost rows is not written until it is (docs/kafka.md).
            snapshots = await rebuild_snapshots(
                log=log, codec=codec, store=live.store, writes=WithoutErased(live.store, keys),
                conversations=settings.snapshots_conversations,
            )
    except DataDirectoryBusy:
        print(f"turnlog replay: a server is running on {settings.data_dir}; stop it first", file=sys.stderr)
        return 1
    counts = ", ".join(f"{len(rows)} {table}" for table, rows in snapshot.items())
    print(f"rebuilt read models from {replayed} events: {counts}")
    print("refolded ledgers: " + ", ".join(f"{group} from {count} events" for group, count in refolded.items()))
    print("rebuilt snapshot tables: " + ", ".join(f"{group} from {count} events" for group, count in snapshots.items()))
    return 0


async def _replay_search(settings: Settings) -> int:
    from processors.ingestion.reindex import rebuild_search_index
    from turnlog.adapters import build_codec, build_key_store, build_log
    from turnlog.system import opened_blobs, opened_search

    log = build_log(settings)
    await log.start()
    try:
        async with opened_blobs(settings) as blobs, opened_search(settings, answers_queries=False) as search:
            report = await rebuild_search_index(
                log=log, codec=build_codec(build_key_store(settings)), blobs=blobs, index=search.index, embedder=search.embedder,
                tokenizer=search.tokenizer, progress=lambda line: print(line, flush=True),
            )
    finally:
        await log.close()
    print(f"rebuilt the search index: {report.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
