"""`turnlog credits`: operators grant credits, set budgets and refills, suspend and reinstate users, from a shell.

Each action appends its request to `governance-requests` and prints the fact that answers it, as one JSON line.
On a Kafka log the fleet's governance role decides it (the command waits for the answer). The embedded log belongs
to one process: with its server stopped, the command runs the governance decider itself on the data dir (so it
needs the server's tiers file, `--tiers` / `TURNLOG_TIERS`); with the server running, use the admin API instead.

Like every option, each has a `TURNLOG_*` variable; the request's are named apart from `turnlog token`'s
(`--org-id`, `--user-id`: `TURNLOG_ORG_ID`, `TURNLOG_USER_ID`), so a variable set for minting tokens never
turns a grant to an org into a grant to one of its users.
"""

import argparse
import asyncio
import dataclasses
import getpass
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from commands.governance.bus import GovernanceBus
from events.governance import (
    BudgetChangeRequested,
    CreditsGrantRequested,
    GovernanceRequest,
    RefillChangeRequested,
    ReinstatementRequested,
    SuspensionRequested,
)
from kernel.envelope import Actor
from kernel.errors import Unavailable
from turnlog.options import CommandParser, number_option
from turnlog.settings import Settings, url_scheme

ACTIONS = ("grant", "budget", "refill", "suspend", "reinstate")
_RESOURCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CLI_ACTOR = "turnlog-cli"


def add_credits_parser(commands: argparse._SubParsersAction) -> None:
    """`turnlog credits <action>`: one parser per action."""
    credits = commands.add_parser(
        "credits", help="grant credits, set budgets and refills, suspend or reinstate users (docs/governance.md)",
        description="Append a governance request to the log and print the fact that answers it (one JSON line).",
    )
    actions = credits.add_subparsers(dest="action", required=True)

    grant = _action(actions, "grant", "grant credits to an org, or to one of its users' own wallet (negative: take back)")
    grant.add_option("--user-id", type=_resource_id, metavar="USER_ID", help="a user's own wallet", shown_default="the org's")
    grant.add_option("--units", type=_units, required=True, metavar="N", help="cost units; negative takes credits back")
    grant.add_option("--reason", required=True, help="why, for the record (an invoice, a correction)")

    budget = _action(actions, "budget", "set the org's monthly token budget (prompt + output tokens per calendar month)")
    budget.add_option("--monthly-tokens", type=_count_or_tier(1), required=True, metavar="N|tier", help="tier: back to the tier's")

    refill = _action(actions, "refill", "set what the org's wallet is topped up to on the 1st of each month (UTC)")
    refill.add_option("--units", type=_count_or_tier(0), required=True, metavar="N|tier", help="0: no refill; tier: the tier's")

    suspend = _action(actions, "suspend", "suspend a user: their turns are refused (403) until the suspension ends")
    suspend.add_option("--user-id", type=_resource_id, required=True, metavar="USER_ID")
    suspend.add_option("--until", metavar="ISO8601", help="when it ends, e.g. 2026-06-01T00:00:00Z (or --for-s)")
    suspend.add_option("--for-s", type=_count_or_tier(1, tier=False), metavar="SECONDS", help="how long (or --until)")
    suspend.add_option("--reason", required=True, help="why, for the record")

    reinstate = _action(actions, "reinstate", "lift a user's suspension and clear their violation score")
    reinstate.add_option("--user-id", type=_resource_id, required=True, metavar="USER_ID")
    reinstate.add_option("--reason", default="reinstated by an operator", help="why, for the record")


def _action(actions: argparse._SubParsersAction, name: str, help: str) -> CommandParser:
    parser: CommandParser = actions.add_parser(name, help=help, description=help)
    parser.add_option("--org-id", type=_resource_id, required=True, metavar="ORG_ID", help="the org")
    parser.add_option("--by", default=f"operator:{getpass.getuser()}", help="who asks, for the record")
    parser.add_option(
        "--timeout-s", type=number_option(above=0), default=30.0, metavar="SECONDS", help="how long to wait for the answer"
    )
    parser.add_option("--data-dir", type=Path, default=Path(".turnlog"), metavar="DIR", help="the embedded log's data directory")
    parser.add_option("--log", metavar="URL", help="event log URL", shown_default="sqlite:///<data-dir>/log.db")
    parser.add_option(
        "--tiers", type=Path, metavar="FILE",
        help="the server's tiers file: needed on the embedded log, where this command decides the request itself",
    )
    return parser


def request_of(arguments: argparse.Namespace, *, now: datetime) -> GovernanceRequest:
    """The request an action's arguments ask for; a ValueError says what is missing or wrong."""
    org_id, by = arguments.org_id, arguments.by
    match arguments.action:
        case "grant":
            return CreditsGrantRequested(org_id=org_id, user_id=arguments.user_id, units=arguments.units, reason=arguments.reason, by=by)
        case "budget":
            return BudgetChangeRequested(org_id=org_id, monthly_tokens=arguments.monthly_tokens, by=by)
        case "refill":
            return RefillChangeRequested(org_id=org_id, units=arguments.units, by=by)
        case "suspend":
            if (arguments.until is None) == (arguments.for_s is None):
                raise ValueError("give either --until or --for-s")
            until = _instant(arguments.until) if arguments.until is not None else now + timedelta(seconds=arguments.for_s)
            if until <= now:
                raise ValueError(f"--until {until.isoformat()} has passed: a suspension ends in the future")
            return SuspensionRequested(org_id=org_id, user_id=arguments.user_id, until=until, reason=arguments.reason, by=by)
        case "reinstate":
            return ReinstatementRequested(org_id=org_id, user_id=arguments.user_id, reason=arguments.reason, by=by)
    raise ValueError(f"unknown action {arguments.action!r}; actions are {', '.join(ACTIONS)}")


def run_credits(arguments: argparse.Namespace) -> int:
    """`turnlog credits <action>`: 0 and the answer on stdout, else 1 (2 for bad arguments) and why on stderr."""
    settings = Settings(data_dir=arguments.data_dir, log_url=arguments.log, tiers_file=arguments.tiers, roles=())
    try:
        request = request_of(arguments, now=datetime.now(UTC))
    except ValueError as error:
        print(f"turnlog credits {arguments.action}: error: {error}", file=sys.stderr)
        return 2
    try:
        answer = asyncio.run(_ask(settings, request, timeout_s=arguments.timeout_s))
    except (ValueError, RuntimeError, Unavailable) as error:
        print(f"turnlog credits {arguments.action}: error: {getattr(error, 'detail', error)}", file=sys.stderr)
        return 1
    print(json.dumps(answer, default=_json_value))
    return 0


async def _ask(settings: Settings, request: GovernanceRequest, *, timeout_s: float) -> dict[str, object]:
    from events.embedded import DataDirectoryBusy
    from kernel.runtime import run_processor
    from processors.governance import GovernanceDecider
    from turnlog.adapters import build_codec, build_log, load_tiers

    embedded = url_scheme(settings.log) == "sqlite"
    config = load_tiers(settings)
    if embedded and config is None:
        raise ValueError(
            "on the embedded log this command decides the request itself: give it the server's tiers file (--tiers or TURNLOG_TIERS)"
        )
    log = build_log(settings)
    try:
        await log.start()
    except DataDirectoryBusy:
        raise RuntimeError(
            f"a server is running on {settings.data_dir}: use its admin API (/v1/admin/..., with a token from"
            " `turnlog token --user-role admin`), or stop it first"
        ) from None
    codec = build_codec()
    bus = GovernanceBus(log=log, codec=codec, answer_timeout_s=timeout_s)
    decider = None
    try:
        await bus.start()
        if embedded:
            assert config is not None
            decider = asyncio.create_task(run_processor(GovernanceDecider(log=log, codec=codec, config=config).processor(), log=log, codec=codec))
        try:
            answer = await bus.ask(request, actor=Actor(user_id=CLI_ACTOR, org_id=request.org_id, workspace_id=""))
        except Unavailable:
            raise RuntimeError(
                f"the request is on the log, but governance did not answer within {timeout_s:g} s: is a process with"
                " the governance role and a tiers file (--tiers) running on this log?"
            ) from None
        fact = {"fact": type(answer.fact).__name__, **dataclasses.asdict(answer.fact)}
        if isinstance(request, CreditsGrantRequested):
            fact["balance"] = (await bus.view.state_of(request.org_id)).balance_of(request.user_id)
        return fact
    finally:
        if decider is not None:
            decider.cancel()
            await asyncio.gather(decider, return_exceptions=True)
        await bus.close()
        await log.close()


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _resource_id(text: str) -> str:
    if not _RESOURCE_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be 1-64 characters of letters, digits, '_' or '-', got {text!r}")
    return text


def _units(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a non-zero integer, got {text!r}")
    return value


def _count_or_tier(at_least: int, *, tier: bool = True):
    """An integer >= `at_least`, or (where `tier`) the word `tier`: back to the tier's (None)."""
    accepted = f"an integer >= {at_least}" + (" or tier" if tier else "")

    def count(text: str) -> int | None:
        if tier and text == "tier":
            return None
        if not text.isdigit() or int(text) < at_least:
            raise argparse.ArgumentTypeError(f"must be {accepted}, got {text!r}")
        return int(text)

    return count


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(f"--until must be an ISO 8601 instant with an offset (2026-06-01T00:00:00Z), got {text!r}")
    return moment.astimezone(UTC)
