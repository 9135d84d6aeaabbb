"""The `turnlog` command: serve, token, replay."""

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from turnlog.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="turnlog", description="An event-sourced ChatGPT-style assistant backend.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API and every processor in one process (embedded defaults)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", type=Path, default=Path(".turnlog"))
    serve.add_argument("--engine", choices=["cpu", "scripted"], default="cpu")
    serve.add_argument("--token-delay-ms", type=float, default=0.0, help="scripted engine: delay per token")
    serve.add_argument("--answer-tokens", type=int, default=20, help="scripted engine: tokens per answer")
    serve.add_argument("--max-output-tokens", type=int, default=256)
    serve.add_argument("--run-lease-s", type=float, default=30.0, help="a silent run is ended after this long")
    serve.add_argument("--log-level", default="info")

    token = commands.add_parser("token", help="print a bearer token that a server on the same data dir accepts")
    token.add_argument("--user", required=True)
    token.add_argument("--org", required=True)
    token.add_argument("--workspace", action="append", required=True, help="repeat for several workspaces")
    token.add_argument("--data-dir", type=Path, default=Path(".turnlog"))
    token.add_argument("--ttl-s", type=int, default=24 * 3600)

    replay = commands.add_parser("replay", help="drop and rebuild projections from the log (server stopped)")
    replay.add_argument("--data-dir", type=Path, default=Path(".turnlog"))
    replay.add_argument("--projection", choices=["read-models"], default="read-models")

    arguments = parser.parse_args(argv)
    match arguments.command:
        case "serve":
            return _serve(arguments)
        case "token":
            return _token(arguments)
        case "replay":
            return asyncio.run(_replay(arguments))
    return 2


def _serve(arguments: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from turnlog.system import running_system

    settings = Settings(
        data_dir=arguments.data_dir,
        engine=arguments.engine,
        token_delay_ms=arguments.token_delay_ms,
        answer_tokens=arguments.answer_tokens,
        max_output_tokens=arguments.max_output_tokens,
        run_lease_s=arguments.run_lease_s,
        heartbeat_s=min(5.0, arguments.run_lease_s / 3),
        host=arguments.host,
        port=arguments.port,
    )
    logging.basicConfig(level=arguments.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    from events.embedded import DataDirectoryBusy, EmbeddedLog
    from projections.chdb import ChdbStore
    from projections.projector import rebuild
    from projections.read_models import ReadModels
    from turnlog.system import build_codec

    settings = Settings(data_dir=arguments.data_dir)
    log = EmbeddedLog(path=settings.log_path)
    try:
        await log.start()
    except DataDirectoryBusy:
        print(f"turnlog replay: a server is running on {settings.data_dir}; stop it first", file=sys.stderr)
        return 1
    store = ChdbStore(str(settings.read_models_path))
    try:
        live = ReadModels(store)
        await live.create_tables()
        last = await rebuild(log=log, codec=build_codec(), live=live, fresh=live.sibling("__rebuild"))
        snapshot = await live.snapshot()
        counts = ", ".join(f"{len(rows)} {table}" for table, rows in snapshot.items())
        print(f"rebuilt read models through log offset {last}: {counts}")
    finally:
        await store.close()
        await log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
