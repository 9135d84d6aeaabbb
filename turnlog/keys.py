"""`turnlog keys`: operators create, list and revoke API keys for programs from a shell (docs/api-keys.md).

`create` appends `ApiKeyCreated` to the log itself (no decider is involved) and prints the key, once, in a JSON
line: only its SHA-256 is kept. `revoke` appends `ApiKeyRevoked`; every API instance refuses the key within its
view's bound. On Kafka (`--log kafka://...`) this works while the fleet runs; the embedded log belongs to one
process, so with its server running use the admin API (`/v1/admin/api-keys`) instead.

The options are named apart from `turnlog token`'s (`--org-id`, `--user-id`, `--workspace-id`), like
`turnlog credits`', so a `TURNLOG_USER` set for minting tokens never redirects a key.
"""

import argparse
import asyncio
import getpass
import json
import re
import sys
from pathlib import Path

from events.api_keys import API_KEY_ROLES, MAX_KEY_DAYS
from turnlog.options import CommandParser, integer_option
from turnlog.settings import Settings

ACTIONS = ("create", "list", "revoke")
_RESOURCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")  # api/api_keys.py's KEY_ID_PATTERN


def add_keys_parser(commands: argparse._SubParsersAction) -> None:
    """`turnlog keys <action>`: one parser per action."""
    keys = commands.add_parser(
        "keys", help="create, list and revoke API keys for programs (docs/api-keys.md)",
        description="API keys act as a user of an org in some workspaces; each change is an event on the log.",
    )
    actions = keys.add_subparsers(dest="action", required=True)

    create = _action(actions, "create", "create a key and print it, once (one JSON line with `key`)")
    create.add_option("--org-id", type=_resource_id, required=True, metavar="ORG_ID", help="the org")
    create.add_option("--user-id", type=_resource_id, required=True, metavar="USER_ID", help="the user the key acts as")
    create.add_option(
        "--workspace-id", type=_resource_id, repeated=True, required=True, metavar="WORKSPACE_ID",
        help="a workspace the key opens; repeat for several",
    )
    create.add_option("--role", choices=API_KEY_ROLES, default="member", help="admin: one of the org's administrators")
    create.add_option("--name", default="", help="what the key is for, shown in listings")
    create.add_option(
        "--expires-in-days", type=integer_option(at_least=1, at_most=MAX_KEY_DAYS), metavar="DAYS",
        shown_default="never", help="the key is refused after this many days",
    )

    listing = _action(actions, "list", "print the org's keys, newest first, one JSON line each (never a secret)")
    listing.add_option("--org-id", type=_resource_id, required=True, metavar="ORG_ID", help="the org")

    revoke = _action(actions, "revoke", "revoke a key: every API instance refuses it from then on")
    revoke.add_option("--key-id", type=_key_id, required=True, metavar="KEY_ID", help="the 16 hex characters after tlk_")
    revoke.add_option("--reason", default="", help="why, for the record")


def _action(actions: argparse._SubParsersAction, name: str, help: str) -> CommandParser:
    parser: CommandParser = actions.add_parser(name, help=help, description=help)
    parser.add_option("--by", default=f"operator:{getpass.getuser()}", help="who does it, for the record")
    parser.add_option("--data-dir", type=Path, default=Path(".turnlog"), metavar="DIR", help="the embedded log's data directory")
    parser.add_option("--log", metavar="URL", help="event log URL", shown_default="sqlite:///<data-dir>/log.db")
    return parser


def run_keys(arguments: argparse.Namespace) -> int:
    """`turnlog keys <action>`: 0 and JSON lines on stdout, else 1 and why on stderr."""
    from api.auth import MAX_WORKSPACES_PER_TOKEN  # the API's modules load only when a key command runs

    settings = Settings(data_dir=arguments.data_dir, log_url=arguments.log, roles=())
    if arguments.action == "create" and len(arguments.workspace_id) > MAX_WORKSPACES_PER_TOKEN:
        print(f"turnlog keys create: error: at most {MAX_WORKSPACES_PER_TOKEN} workspaces", file=sys.stderr)
        return 2
    try:
        lines = asyncio.run(_run(settings, arguments))
    except (ValueError, RuntimeError) as error:
        print(f"turnlog keys {arguments.action}: error: {error}", file=sys.stderr)
        return 1
    for line in lines:
        print(json.dumps(line))
    return 0


async def _run(settings: Settings, arguments: argparse.Namespace) -> list[dict]:
    from api.api_key_admin import api_key_json, key_created, key_record
    from events.api_keys import ApiKeyRevoked
    from events.embedded import DataDirectoryBusy
    from kernel.envelope import Actor, utc_now
    from projections.api_keys import ApiKeyView
    from turnlog.adapters import build_codec, build_log

    log = build_log(settings)
    try:
        await log.start()
    except DataDirectoryBusy:
        raise RuntimeError(
            f"a server is running on {settings.data_dir}: use its admin API (/v1/admin/api-keys, with a token from"
            " `turnlog token --user-role admin`), or stop it first"
        ) from None
    codec = build_codec()
    view = ApiKeyView(log=log, codec=codec)
    try:
        await view.start()  # every key on the log
        now = utc_now()
        match arguments.action:
            case "create":
                created, token = key_created(
                    org_id=arguments.org_id, user_id=arguments.user_id, workspace_ids=tuple(arguments.workspace_id),
                    role=arguments.role, name=arguments.name, created_by=arguments.by,
                    expires_in_days=arguments.expires_in_days, now=now,
                )
                actor = Actor(user_id=arguments.by, org_id=arguments.org_id, workspace_id="")
                [record] = await log.append([key_record(codec, created, by=actor)], durable=True)
                await view.wait_until_applied(record.offset)
                key = view.get(created.key_id)
                assert key is not None
                return [{**api_key_json(key, now=now), "key": token}]
            case "list":
                return [api_key_json(key, now=now) for key in view.of_org(arguments.org_id)]
            case "revoke":
                key = view.get(arguments.key_id)
                if key is None:
                    raise ValueError(f"no API key {arguments.key_id} on this log")
                if key.revoked_at is None:
                    revoked = ApiKeyRevoked(
                        key_id=key.key_id, org_id=key.org_id, revoked_by=arguments.by, reason=arguments.reason,
                        revoked_at=now,
                    )
                    actor = Actor(user_id=arguments.by, org_id=key.org_id, workspace_id="")
                    [record] = await log.append([key_record(codec, revoked, by=actor)], durable=True)
                    await view.wait_until_applied(record.offset)
                    key = view.get(key.key_id)
                    assert key is not None
                return [api_key_json(key, now=now)]
        raise ValueError(f"unknown action {arguments.action!r}; actions are {', '.join(ACTIONS)}")
    finally:
        await view.close()
        await log.close()


def _resource_id(text: str) -> str:
    if not _RESOURCE_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be 1-64 characters of letters, digits, '_' or '-', got {text!r}")
    return text


def _key_id(text: str) -> str:
    if not _KEY_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be a key id: 16 hex characters (what follows tlk_), got {text!r}")
    return text
