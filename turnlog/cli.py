"""The `turnlog` command: serve, token, replay."""

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from turnlog.settings import PROCESSOR_ROLES, PROCESSOR_RUNTIMES, Settings


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"TURNLOG_{name}", default)


def _add_deployment_options(parser: argparse.ArgumentParser) -> None:
    """Where the data lives and which adapters hold it (flags win over TURNLOG_* variables)."""
    parser.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", ".turnlog")))
    parser.add_argument("--log", default=_env("LOG"), help="event log URL (default sqlite:///<data-dir>/log.db)")
    parser.add_argument("--store", default=_env("STORE"), help="read-model store URL (default chdb:///<data-dir>/read-models)")
    _add_document_options(parser)
    parser.add_argument(
        "--max-upload-mb", type=float, default=float(_env("MAX_UPLOAD_MB", "25")),
        help="the largest file an upload may be, in MiB (default 25)",
    )
    parser.add_argument("--engine", choices=["cpu", "scripted", "sglang", "openai-compatible"], default=_env("ENGINE", "cpu"))
    parser.add_argument("--engine-url", default=_env("ENGINE_URL"), help="openai-compatible engine: the server's API root")
    parser.add_argument(
        "--engine-model", default=_env("ENGINE_MODEL"), help="sglang: model path; openai-compatible: served model name"
    )
    parser.add_argument(
        "--engine-concurrency", type=int, default=_env("ENGINE_CONCURRENCY"),
        help="sglang, openai-compatible: generations at once (default 64 / 16); a pools file sets each pool's capacity instead",
    )
    parser.add_argument(
        "--pools", type=Path, default=_env("POOLS"),
        help="a pools file (TOML, see pools.example.toml): the inference pools runs are routed over;"
        " without one, one pool on the --engine given",
    )
    parser.add_argument(
        "--inference-pools", default=_env("INFERENCE_POOLS", ""),
        help="the inference role serves these pools of the pools file (comma-separated; default: all)",
    )
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="scripted engine: delay per token")
    parser.add_argument("--answer-tokens", type=int, default=20, help="scripted engine: tokens per answer")
    parser.add_argument("--max-output-tokens", type=int, default=256)
    parser.add_argument(
        "--context-tokens", type=int, default=int(_env("CONTEXT_TOKENS", "8192")),
        help="the engine's context window: prompts (history, summary, passages) are budgeted against it",
    )
    parser.add_argument("--run-lease-s", type=float, default=30.0, help="a silent run is ended after this long")
    parser.add_argument(
        "--processor-runtime", choices=PROCESSOR_RUNTIMES, default=_env("PROCESSOR_RUNTIME", "auto"),
        help="auto: faust-streaming agents on a Kafka log, the log's own consumers on the embedded one",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "info"))


def _add_document_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--blobs", default=_env("BLOBS"),
        help="where uploaded files' bytes live: file:///path or s3://bucket/prefix?endpoint=http://host:9000 (default file:///<data-dir>/blobs)",
    )
    parser.add_argument(
        "--search", default=_env("SEARCH"),
        help="the search index: embedded:///path or elasticsearch://host:9200 (default embedded:///<data-dir>/search)",
    )


def _settings(arguments: argparse.Namespace, roles: tuple[str, ...]) -> Settings:
    return Settings(
        data_dir=arguments.data_dir,
        log_url=arguments.log,
        store_url=arguments.store,
        blobs_url=arguments.blobs,
        search_url=arguments.search,
        max_upload_mb=arguments.max_upload_mb,
        roles=roles,
        processor_runtime=arguments.processor_runtime,
        engine=arguments.engine,
        engine_url=arguments.engine_url,
        engine_model=arguments.engine_model,
        engine_api_key=_env("ENGINE_API_KEY"),  # environment only: a flag would show in `ps`
        engine_concurrency=arguments.engine_concurrency,
        pools_file=arguments.pools,
        inference_pools=tuple(name.strip() for name in arguments.inference_pools.split(",") if name.strip()),
        token_delay_ms=arguments.token_delay_ms,
        answer_tokens=arguments.answer_tokens,
        max_output_tokens=arguments.max_output_tokens,
        context_tokens=arguments.context_tokens,
        run_lease_s=arguments.run_lease_s,
        heartbeat_s=min(5.0, arguments.run_lease_s / 3),
        host=getattr(arguments, "host", "127.0.0.1"),
        port=getattr(arguments, "port", 8000),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="turnlog", description="An event-sourced ChatGPT-style assistant backend.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API and (by default) every processor role in one process")
    serve.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(_env("PORT", "8000")))
    serve.add_argument(
        "--role", choices=["all", "api"], default=_env("ROLE", "all"),
        help="all: API plus every processor (the default); api: the API alone, processors run in `turnlog worker`",
    )
    _add_deployment_options(serve)

    worker = commands.add_parser("worker", help="run processor roles without the API")
    worker.add_argument("--role", action="append", choices=PROCESSOR_ROLES, required=True, help="repeat for several")
    _add_deployment_options(worker)

    token = commands.add_parser("token", help="print a bearer token that a server on the same data dir accepts")
    token.add_argument("--user", required=True)
    token.add_argument("--org", required=True)
    token.add_argument("--workspace", action="append", required=True, help="repeat for several workspaces")
    token.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", ".turnlog")))
    token.add_argument("--ttl-s", type=int, default=24 * 3600)

    replay = commands.add_parser("replay", help="drop and rebuild projections from the log (server stopped)")
    replay.add_argument("--data-dir", type=Path, default=Path(_env("DATA_DIR", ".turnlog")))
    replay.add_argument(
        "--projection", choices=["read-models", "search"], default="read-models",
        help="read-models: the ClickHouse tables (server stopped); search: re-chunk and re-embed every file into a fresh index",
    )
    replay.add_argument("--log", default=_env("LOG"), help="event log URL (default sqlite:///<data-dir>/log.db)")
    replay.add_argument("--store", default=_env("STORE"), help="read-model store URL (default chdb:///<data-dir>/read-models)")
    _add_document_options(replay)

    arguments = parser.parse_args(argv)
    match arguments.command:
        case "serve":
            return _serve(arguments)
        case "worker":
            return _work(arguments)
        case "token":
            return _token(arguments)
        case "replay":
            return asyncio.run(_replay(arguments))
    return 2


def _serve(arguments: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from turnlog.system import running_system

    settings = _settings(arguments, roles=() if arguments.role == "api" else PROCESSOR_ROLES)
    _configure_logging(arguments.log_level)
    app = create_app(lambda: running_system(settings))
    # Open streams would hold a graceful shutdown forever; clients resume them with Last-Event-ID.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=arguments.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


def _work(arguments: argparse.Namespace) -> int:
    from turnlog.system import run_workers

    settings = _settings(arguments, roles=tuple(dict.fromkeys(arguments.role)))
    _configure_logging(arguments.log_level)
    asyncio.run(_until_signalled(run_workers(settings)))
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


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _token(arguments: argparse.Namespace) -> int:
    from api.auth import issue_token, load_or_create_secret

    secret = load_or_create_secret(arguments.data_dir)
    print(
        issue_token(
            secret, user_id=arguments.user, org_id=arguments.org, workspace_ids=arguments.workspace, ttl_s=arguments.ttl_s
        )
    )
    return 0


async def _replay(arguments: argparse.Namespace) -> int:
    from events.embedded import DataDirectoryBusy
    from projections.projector import rebuild
    from turnlog.adapters import build_codec
    from turnlog.system import opened_storage

    settings = Settings(
        data_dir=arguments.data_dir,
        log_url=arguments.log,
        store_url=arguments.store,
        blobs_url=arguments.blobs,
        search_url=arguments.search,
    )
    if arguments.projection == "search":
        try:
            return await _replay_search(settings)
        except DataDirectoryBusy:
            print(f"turnlog replay: a server is running on {settings.data_dir}; stop it first", file=sys.stderr)
            return 1
    try:
        async with opened_storage(settings) as (log, live):
            replayed = await rebuild(log=log, codec=build_codec(), live=live, fresh=live.sibling("__rebuild"))
            snapshot = await live.snapshot()
    except DataDirectoryBusy:
        print(f"turnlog replay: a server is running on {settings.data_dir}; stop it first", file=sys.stderr)
        return 1
    counts = ", ".join(f"{len(rows)} {table}" for table, rows in snapshot.items())
    print(f"rebuilt read models from {replayed} events: {counts}")
    return 0


async def _replay_search(settings: Settings) -> int:
    from processors.ingestion.reindex import rebuild_search_index
    from turnlog.adapters import build_codec, build_log
    from turnlog.system import opened_blobs, opened_search

    log = build_log(settings)
    await log.start()
    try:
        async with opened_blobs(settings) as blobs, opened_search(settings) as search:
            report = await rebuild_search_index(
                log=log, codec=build_codec(), blobs=blobs, index=search.index, embedder=search.embedder,
                tokenizer=search.tokenizer, progress=lambda line: print(line, flush=True),
            )
    finally:
        await log.close()
    print(f"rebuilt the search index: {report.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
