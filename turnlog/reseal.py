"""`turnlog reseal`: seal the content events an older turnlog wrote in plaintext, in place on the embedded log.

Events written before sealing existed still decode, but an erasure cannot shred them: their text is on the log
in the clear. This rewrites each such envelope with its payload sealed under its subject's data key (an erased
subject's under a key no one keeps), keeping its offset, key, ids and times, and overwrites the old bytes on
disk. Readers see the same events afterwards. Run it once with the server stopped (the embedded log belongs to
one process); running it again changes nothing. A Kafka topic cannot be rewritten in place (docs/encryption.md).
"""

import argparse
import asyncio
import json
import sys
from pathlib import Path

from turnlog.options import CommandParser
from turnlog.settings import Settings, url_scheme


def add_reseal_parser(commands: argparse._SubParsersAction) -> None:
    reseal: CommandParser = commands.add_parser(
        "reseal", help="seal the plaintext content events of an older turnlog in place (embedded log, server stopped)",
        description="Rewrites content events written before sealing with their payloads sealed (docs/encryption.md).",
    )
    reseal.add_option("--data-dir", type=Path, default=Path(".turnlog"), metavar="DIR", help="the stopped server's data directory")
    reseal.add_option("--log", metavar="URL", help="event log URL", shown_default="sqlite:///<data-dir>/log.db")
    reseal.add_option("--keys", metavar="URL", help="the key store", shown_default="file:///<data-dir>/keys")


def run_reseal(arguments: argparse.Namespace) -> int:
    """0 and one JSON line on stdout (`{"resealed": N}`), else 1 and why on stderr."""
    settings = Settings(data_dir=arguments.data_dir, log_url=arguments.log, keys_url=arguments.keys, roles=())
    if url_scheme(settings.log) != "sqlite":
        print(
            "turnlog reseal: error: only the embedded log is rewritten in place; a Kafka topic is immutable"
            " (copy it through a resealing consumer instead: docs/encryption.md)",
            file=sys.stderr,
        )
        return 1
    try:
        resealed = asyncio.run(_reseal(settings))
    except (ValueError, RuntimeError) as error:
        print(f"turnlog reseal: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"resealed": resealed}))
    return 0


async def _reseal(settings: Settings) -> int:
    from events.embedded import DataDirectoryBusy, EmbeddedLog
    from kernel.codec import UndecodableMessage
    from turnlog.adapters import build_codec, build_key_store, build_log

    codec = build_codec(build_key_store(settings))
    log = build_log(settings)
    assert isinstance(log, EmbeddedLog)

    def resealed(value: bytes) -> bytes | None:
        try:
            return codec.resealed(value)
        except UndecodableMessage:
            return None  # not an envelope this codec reads (a dead letter's junk): left as it is

    try:
        await log.start()
    except DataDirectoryBusy:
        raise RuntimeError(f"a server is running on {settings.data_dir}: stop it first") from None
    try:
        return await log.rewrite_values(resealed)
    finally:
        await log.close()
