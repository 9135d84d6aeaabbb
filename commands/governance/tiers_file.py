"""The tiers file: each tier's credits, budget, rates and concurrency, the orgs' tiers, prices per pool, abuse policy.

`parse_tiers_file` reads it (TOML, see `tiers.example.toml`) into a `GovernanceConfig`; anything wrong stops
with `TiersFileError`, which names the file, the line and the field (`tiers.toml:14: tiers.free.user.requests_per_minute:
must be an integer >= 1, got "many"`). `[tenants]` has the pools file's shape, so one org-to-tier table can serve
both (`GovernanceConfig.with_tenants`). Without a file governance is off (nothing is limited, refused or charged).
Nothing here reads a file or a clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from kernel.config_files import ConfigFileError, read_toml

DEFAULT_TIER = "free"
DEFAULT_PRICE = "default"  # the price of pools the file does not name
_TIER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class TiersFileError(ConfigFileError):
    """A tiers file that cannot be used: `source`, `line` (1-based, when known), `field`, `problem`."""


class TierError(ValueError):
    """A value at `field` (a dotted path, as in the file: `tenants.orgs.org_acme`) that cannot be used."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Rates and concurrency for one scope: each user, or the whole org. None: unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None  # prompt and output tokens of finished runs
    concurrent_runs: int | None = None  # admitted runs not yet ended


@dataclass(frozen=True, kw_only=True)
class Tier:
    """What an org of this tier gets: credits, a monthly token budget, and limits per user and per org."""

    name: str
    credits: bool = True  # runs need a positive balance; false: postpaid (charged, never refused for credits)
    start_balance: int = 0  # granted once, when governance first sees the org
    monthly_refill: int = 0  # the org's wallet is topped up to this on the 1st of each month (UTC); 0: never
    monthly_token_budget: int | None = None  # prompt + output tokens per calendar month (UTC); None: no budget
    reservation_units: int = 0  # a run's estimated most cost, held from admission until its end
    user: Limits = field(default_factory=Limits)
    org: Limits = field(default_factory=Limits)


@dataclass(frozen=True, kw_only=True)
class Price:
    """A pool's price in integer cost units per 1,000 tokens; a run costs the sum, rounded up to a whole unit."""

    prompt: int = 0  # prompt tokens not served from the cache
    cached: int = 0  # prompt tokens served from the engine's prefix cache
    output: int = 0


@dataclass(frozen=True, kw_only=True)
class AbusePolicy:
    """Violations add points to a user's score, which halves every `half_life_s`; at `threshold` the user is suspended."""

    threshold: float = 20.0
    half_life_s: float = 600.0
    suspension_s: float = 900.0
    points: Mapping[str, float] = field(
        default_factory=lambda: {"rate_limited": 1.0, "flagged_input": 5.0, "sandbox_escape": 10.0, "other": 3.0}
    )

    def points_for(self, kind: str) -> float:
        return self.points.get(kind, self.points.get("other", 0.0))


@dataclass(frozen=True, kw_only=True)
class AdmissionPolicy:
    """How long a reservation may wait for its run's end, and what a client at its concurrency limit is told."""

    reservation_ttl_s: float = 86_400.0  # far beyond any run's life: a run ends by its lease or its tools' wall clock
    concurrency_retry_after_s: float = 2.0


@dataclass(frozen=True, kw_only=True)
class EdgePolicy:
    """Requests whose token does not authenticate, per client address, in each API instance's memory."""

    requests_per_minute: int = 60


@dataclass(frozen=True, kw_only=True)
class GovernanceConfig:
    """The tiers, which tier each org is on, the pools' prices, and the abuse, admission and edge policies."""

    tiers: Mapping[str, Tier] = field(default_factory=lambda: {DEFAULT_TIER: Tier(name=DEFAULT_TIER, credits=False)})
    default_tier: str = DEFAULT_TIER
    orgs: Mapping[str, str] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)
    abuse: AbusePolicy = field(default_factory=AbusePolicy)
    admission: AdmissionPolicy = field(default_factory=AdmissionPolicy)
    edge: EdgePolicy = field(default_factory=EdgePolicy)

    def __post_init__(self) -> None:
        if self.default_tier not in self.tiers:
            raise TierError("tenants.default_tier", f"no tier named {self.default_tier!r}; tiers are {', '.join(self.tiers)}")
        for org_id, tier in self.orgs.items():
            if tier not in self.tiers:
                raise TierError(f"tenants.orgs.{org_id}", f"no tier named {tier!r}; tiers are {', '.join(self.tiers)}")

    def tier_of(self, org_id: str) -> Tier:
        return self.tiers[self.orgs.get(org_id, self.default_tier)]

    def price_of(self, pool: str) -> Price:
        return self.prices.get(pool) or self.prices.get(DEFAULT_PRICE) or Price()

    def unpriced(self, pools: Iterable[str]) -> tuple[str, ...]:
        """The pools that would run for free (neither named under [prices] nor covered by [prices.default])."""
        if DEFAULT_PRICE in self.prices:
            return ()
        return tuple(pool for pool in pools if pool not in self.prices)

    def with_tenants(self, orgs: Mapping[str, str], *, default_tier: str | None = None) -> GovernanceConfig:
        """This configuration with another org-to-tier table (the pools file's [tenants]); each tier must exist here."""
        try:
            return replace(self, orgs=dict(orgs), default_tier=default_tier or self.default_tier)
        except TierError as error:
            raise TiersFileError(source="tenants", line=None, field=error.field, problem=error.problem) from None


# --- the file ---------------------------------------------------------------------------------------

_SECTIONS = ("tenants", "tiers", "prices", "abuse", "admission", "edge")
_TIER_KEYS = ("credits", "start_balance", "monthly_refill", "monthly_token_budget", "reservation_units", "user", "org")
_LIMIT_KEYS = ("requests_per_minute", "tokens_per_minute", "concurrent_runs")
_PRICE_KEYS = ("prompt", "cached", "output")


def parse_tiers_file(text: str | bytes, *, source: str = "tiers.toml") -> GovernanceConfig:
    """A tiers file's configuration; `TiersFileError` names the line and the field at fault."""
    text, document = read_toml(text, source=source, error=TiersFileError)
    try:
        return _config(document)
    except TierError as error:
        raise TiersFileError(source=source, line=_line_of(text, error.field), field=error.field, problem=error.problem) from None


def _config(document: Mapping[str, object]) -> GovernanceConfig:
    _known(document, "", _SECTIONS, what="section")
    tiers_table = _table(document, "tiers")
    if not tiers_table:
        raise TierError("tiers", "declare at least one tier, e.g. [tiers.free]")
    tiers = {name: _tier(name, _table(tiers_table, name, where="tiers")) for name in tiers_table}
    tenants = _table(document, "tenants")
    _known(tenants, "tenants", ("default_tier", "orgs"))
    default_tier = _string(tenants, "default_tier", "tenants") or (DEFAULT_TIER if DEFAULT_TIER in tiers else next(iter(tiers)))
    orgs_table = _table(tenants, "orgs", where="tenants")
    orgs = {org_id: _string(orgs_table, org_id, "tenants.orgs") or "" for org_id in orgs_table}
    prices_table = _table(document, "prices")
    prices = {pool: _price(pool, _table(prices_table, pool, where="prices")) for pool in prices_table}
    return GovernanceConfig(
        tiers=tiers, default_tier=default_tier, orgs=orgs, prices=prices,
        abuse=_abuse(_table(document, "abuse")), admission=_admission(_table(document, "admission")),
        edge=_edge(_table(document, "edge")),
    )


def _tier(name: str, table: Mapping[str, object]) -> Tier:
    where = f"tiers.{name}"
    if not _TIER_NAME.fullmatch(name):
        raise TierError(where, "a tier name is 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit")
    _known(table, where, _TIER_KEYS)
    credits = table.get("credits", True)
    if not isinstance(credits, bool):
        raise TierError(f"{where}.credits", f"must be true or false, got {_toml_value(credits)}")
    return Tier(
        name=name,
        credits=credits,
        start_balance=_integer(table, "start_balance", where, minimum=0) or 0,
        monthly_refill=_integer(table, "monthly_refill", where, minimum=0) or 0,
        monthly_token_budget=_integer(table, "monthly_token_budget", where, minimum=1),
        reservation_units=_integer(table, "reservation_units", where, minimum=0) or 0,
        user=_limits(_table(table, "user", where=where), f"{where}.user"),
        org=_limits(_table(table, "org", where=where), f"{where}.org"),
    )


def _limits(table: Mapping[str, object], where: str) -> Limits:
    _known(table, where, _LIMIT_KEYS)
    return Limits(**{key: _integer(table, key, where, minimum=1) for key in _LIMIT_KEYS})


def _price(pool: str, table: Mapping[str, object]) -> Price:
    where = f"prices.{pool}"
    _known(table, where, _PRICE_KEYS)
    return Price(**{key: _integer(table, key, where, minimum=0) or 0 for key in _PRICE_KEYS})


def _abuse(table: Mapping[str, object]) -> AbusePolicy:
    _known(table, "abuse", ("threshold", "half_life_s", "suspension_s", "points"))
    defaults = AbusePolicy()
    points_table = _table(table, "points", where="abuse")
    points = {**defaults.points, **{kind: _number(points_table, kind, "abuse.points", minimum=0.0) for kind in points_table}}
    return AbusePolicy(
        threshold=_number(table, "threshold", "abuse", positive=True, default=defaults.threshold),
        half_life_s=_number(table, "half_life_s", "abuse", positive=True, default=defaults.half_life_s),
        suspension_s=_number(table, "suspension_s", "abuse", positive=True, default=defaults.suspension_s),
        points=points,
    )


def _admission(table: Mapping[str, object]) -> AdmissionPolicy:
    _known(table, "admission", ("reservation_ttl_s", "concurrency_retry_after_s"))
    defaults = AdmissionPolicy()
    return AdmissionPolicy(
        reservation_ttl_s=_number(table, "reservation_ttl_s", "admission", positive=True, default=defaults.reservation_ttl_s),
        concurrency_retry_after_s=_number(
            table, "concurrency_retry_after_s", "admission", positive=True, default=defaults.concurrency_retry_after_s
        ),
    )


def _edge(table: Mapping[str, object]) -> EdgePolicy:
    _known(table, "edge", ("requests_per_minute",))
    rate = _integer(table, "requests_per_minute", "edge", minimum=1)
    return EdgePolicy() if rate is None else EdgePolicy(requests_per_minute=rate)


# --- values -----------------------------------------------------------------------------------------


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _known(table: Mapping[str, object], where: str, keys: tuple[str, ...], *, what: str = "key") -> None:
    for key in table:
        if key not in keys:
            raise TierError(_path(where, key), f"unknown {what}; {what}s are {', '.join(keys)}")


def _table(table: Mapping[str, object], key: str, *, where: str = "") -> Mapping[str, object]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise TierError(_path(where, key), f"must be a table, got {_toml_value(value)}")
    return value


def _string(table: Mapping[str, object], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise TierError(_path(where, key), f"must be a string, got {_toml_value(value)}")
    return value


def _integer(table: Mapping[str, object], key: str, where: str, *, minimum: int) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    # bool is an int in Python; TOML's `true` is not a number here.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TierError(_path(where, key), f"must be an integer >= {minimum}, got {_toml_value(value)}")
    return value


def _number(
    table: Mapping[str, object], key: str, where: str, *, minimum: float = 0.0, positive: bool = False, default: float = 0.0
) -> float:
    value = table.get(key, default)
    right = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not right or value < minimum or (positive and value <= 0):
        bound = "> 0" if positive else f">= {minimum:g}"
        raise TierError(_path(where, key), f"must be a finite number {bound}, got {_toml_value(value)}")
    return float(value)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list" if value else "[]"
    return repr(value)


# --- where in the text a field is -------------------------------------------------------------------

_HEADER = re.compile(r"\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?")
_ASSIGNMENT = re.compile(r"\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=(.*)")
_INLINE_KEY = re.compile(r"[{,]\s*([A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')\s*=")


def _line_of(text: str, path: str) -> int | None:
    """The 1-based line that sets `path` (`tiers.free.user.concurrent_runs`) or first sets something under it, else
    the line of the nearest table above it.

    tomllib does not give positions back: this follows table headers and (dotted) keys, inline tables included,
    and falls back to the line of the longest prefix of `path` it saw (the table a missing key belongs in).
    """
    target = _dotted(path)
    best_line, best_depth = None, 0
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        header = _HEADER.fullmatch(line)
        found: list[tuple[str, ...]] = []
        if header is not None:
            table = _dotted(header.group(1))
            found.append(table)
        else:
            assignment = _ASSIGNMENT.match(line)
            if assignment is None:
                continue
            key = (*table, *_dotted(assignment.group(1)))
            found.append(key)
            value = assignment.group(2).strip()
            if value.startswith("{"):
                found.extend((*key, *_dotted(inner)) for inner in _INLINE_KEY.findall(value))
        for parts in found:
            if parts[: len(target)] == target:  # the path itself, or the first thing set under it
                return number
            if target[: len(parts)] == parts and len(parts) > best_depth:
                best_line, best_depth = number, len(parts)
    return best_line


def _dotted(path: str) -> tuple[str, ...]:
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[^.\s]+", path)
    return tuple(part.strip("\"'") for part in parts)
