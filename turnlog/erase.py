"""`turnlog erase`: destroy a user's (or an org's) data keys and have the derived stores drop their data.

The same erasure as `POST /v1/admin/erasures` (commands/erasure.py), for operators: the keys go at
once, and the `SubjectErased` event it appends makes the projector and the ingester drop the rows,
chunks and blobs when they next run. Its files are listed from the log before the keys go. On Kafka
this works while the fleet runs; the embedded log belongs to one process, so stop its server first
(or use the admin API). `turnlog erase --org-id O --user-id U` erases a user; an org's erasure must
be asked for by name (`--entire-org yes`), never by leaving `--user-id` out.
"""

import argparse
import asyncio
import getpass
import json
import re
import sys
from pathlib import Path

from turnlog.options import CommandParser
from turnlog.settings import Settings

_RESOURCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def add_erase_parser(commands: argparse._SubParsersAction) -> None:
    erase: CommandParser = commands.add_parser(
        "erase", help="erase a user's or an org's data: destroy their keys (docs/encryption.md)",
        description="Destroys the data keys their content is sealed with, then appends SubjectErased.",
    )
    # Named apart from `turnlog token`'s --user and --org (like `turnlog keys`), so a TURNLOG_USER set for minting
    # tokens never chooses whom to erase.
    erase.add_option("--org-id", type=_resource_id, required=True, metavar="ORG_ID", help="the org (of the user, or to erase)")
    erase.add_option("--user-id", type=_resource_id, metavar="USER_ID", help="the user to erase")
    erase.add_option(
        "--entire-org", choices=["yes"], metavar="yes", help="erase the whole org: every user's key and the org's own"
    )
    erase.add_option("--by", default=f"operator:{getpass.getuser()}", help="who asks, for the record")
    erase.add_option("--data-dir", type=Path, default=Path(".turnlog"), metavar="DIR", help="the stopped server's data directory")
    erase.add_option("--log", metavar="URL", help="event log URL", shown_default="sqlite:///<data-dir>/log.db")
    erase.add_option("--keys", metavar="URL", help="the key store", shown_default="file:///<data-dir>/keys")


def run_erase(arguments: argparse.Namespace) -> int:
    """0 and one JSON line on stdout, else 1 (or 2 for bad options) and why on stderr."""
    if (arguments.user_id is None) == (arguments.entire_org is None):
        print("turnlog erase: error: give --user-id USER_ID, or --entire-org yes to erase the whole org", file=sys.stderr)
        return 2
    settings = Settings(data_dir=arguments.data_dir, log_url=arguments.log, keys_url=arguments.keys, roles=())
    try:
        line = asyncio.run(_erase(settings, org_id=arguments.org_id, user_id=arguments.user_id, by=arguments.by))
    except (ValueError, RuntimeError) as error:
        print(f"turnlog erase: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(line))
    return 0


async def _erase(settings: Settings, *, org_id: str, user_id: str | None, by: str) -> dict:
    from commands.erasure import erase_subject, files_on_the_log
    from events.embedded import DataDirectoryBusy
    from kernel.sealing import Subject
    from turnlog.adapters import build_codec, build_key_store, build_log

    subject = Subject(org_id=org_id, user_id=user_id)
    keys = build_key_store(settings)
    codec = build_codec(keys)
    log = build_log(settings)
    try:
        await log.start()
    except DataDirectoryBusy:
        raise RuntimeError(
            f"a server is running on {settings.data_dir}: use its admin API (POST /v1/admin/erasures), or stop it first"
        ) from None
    try:
        files = await files_on_the_log(subject, log=log, codec=codec)
        erased = await erase_subject(subject, files=files, log=log, codec=codec, keys=keys, requested_by=by)
    finally:
        await log.close()
    return {
        "orgId": erased.org_id, "userId": erased.user_id, "keysDestroyed": erased.keys_destroyed,
        "files": len(erased.files), "requestedBy": erased.requested_by, "erasedAt": erased.erased_at.isoformat(),
    }


def _resource_id(text: str) -> str:
    if not _RESOURCE_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be 1-64 characters of letters, digits, '_' or '-', got {text!r}")
    return text
