"""Inference pools in configuration: what each pool runs and serves, the routing thresholds, the breaker's knobs.

A pool is a set of engines behind one name (one SGLang server, an OpenAI-compatible endpoint, the
CPU model): its context window, latency tier, price, capacity, tool support and the tenant tiers it
serves. `parse_pools` reads a pools file (TOML, see `pools.example.toml`) and names the field at
fault when one is wrong; `default_pools` is the single pool turnlog ran before pools existed. The
decisions made over these (which pool a run goes to, breakers, admission) live in
`inference/routing.py`. Nothing here reads a file or a clock.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from events.topics import inference_topic, inference_topic_for

LatencyTier = Literal["interactive", "batch"]
TenantTier = Literal["free", "pro", "enterprise"]
SizeClass = Literal["short", "long"]
EngineKind = Literal["scripted", "cpu", "sglang", "openai-compatible"]

LATENCY_TIERS: tuple[LatencyTier, ...] = get_args(LatencyTier)
TENANT_TIERS: tuple[TenantTier, ...] = get_args(TenantTier)
SIZE_CLASSES: tuple[SizeClass, ...] = get_args(SizeClass)
ENGINE_KINDS: tuple[EngineKind, ...] = get_args(EngineKind)

DEFAULT_POOL = "interactive"
DEFAULT_SHORT_PROMPT_MAX_TOKENS = 4_096
# Kafka allows [a-zA-Z0-9._-] in topic names; a dot would make `<pool>.<size>` ambiguous.
_POOL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class PoolsFileError(ValueError):
    """A pools file (or a pool built in code) that cannot be used; `field` names where, e.g. `pools[1].capacity`."""

    def __init__(self, *, source: str, field: str, problem: str) -> None:
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.field = field
        self.problem = problem


@dataclass(frozen=True, kw_only=True)
class PoolConfig:
    """One inference pool: how to reach its engine and what runs it may take."""

    name: str
    engine: EngineKind
    engine_url: str | None = None  # openai-compatible: the server's API root
    engine_model: str | None = None  # sglang: the model path; openai-compatible: the served model name
    engine_api_key_env: str | None = None  # openai-compatible: the environment variable holding the key
    engine_tool_parser: str | None = None  # sglang: SGLang's function-call parser for the model (qwen25, llama3, ...)
    context_tokens: int | None  # prompt + output must fit; None: only the engine knows (it refuses what does not fit)
    latency_tier: LatencyTier = "interactive"
    cost_per_1k_tokens: float = 0.0
    capacity: int  # generations in flight at most in each worker process of the pool (one worker per engine endpoint)
    long_capacity: int | None = None  # of those, long prompts at most (split pools); default capacity // 4, at least 1
    split_by_size: bool = True  # one topic per size class; False: the pool's single topic of old
    supports_tools: bool = True
    tiers: tuple[TenantTier, ...] = TENANT_TIERS
    tenant_share: float = 0.5  # the slots one tenant may hold while other tenants wait

    def __post_init__(self) -> None:
        def bad(field_name: str, problem: str) -> PoolsFileError:
            return PoolsFileError(source=f"pool {self.name!r}", field=field_name, problem=problem)

        if not _POOL_NAME.fullmatch(self.name):
            raise bad("name", "a pool name is 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit")
        if self.engine not in ENGINE_KINDS:
            raise bad("engine", f"unknown engine {self.engine!r}; choose {', '.join(ENGINE_KINDS)}")
        if self.engine == "openai-compatible":
            if not self.engine_url:
                raise bad("engine_url", "an openai-compatible pool needs the server's URL")
            if not self.engine_url.startswith(("http://", "https://")):
                raise bad("engine_url", f"{self.engine_url!r} is not an http(s) URL")
        elif self.engine_url is not None:
            raise bad("engine_url", f"only openai-compatible pools are reached by URL, not {self.engine}")
        if self.engine in ("sglang", "openai-compatible") and not self.engine_model:
            raise bad("engine_model", f"a {self.engine} pool needs the model it serves")
        if self.engine in ("scripted", "cpu") and self.engine_model is not None:
            raise bad("engine_model", f"the {self.engine} engine has a fixed model")
        if self.engine_tool_parser is not None and self.engine != "sglang":
            raise bad("engine_tool_parser", "only the sglang engine parses calls itself (a server behind openai-compatible does)")
        if self.engine_api_key_env is not None and self.engine != "openai-compatible":
            raise bad("engine_api_key_env", "only openai-compatible pools send an API key")
        if self.context_tokens is not None and self.context_tokens < 1:
            raise bad("context_tokens", f"must be >= 1, got {self.context_tokens}")
        if self.latency_tier not in LATENCY_TIERS:
            raise bad("latency_tier", f"unknown latency tier {self.latency_tier!r}; choose {', '.join(LATENCY_TIERS)}")
        if not math.isfinite(self.cost_per_1k_tokens) or self.cost_per_1k_tokens < 0:
            raise bad("cost_per_1k_tokens", f"must be a finite number >= 0, got {self.cost_per_1k_tokens}")
        if self.capacity < 1:
            raise bad("capacity", f"must be >= 1, got {self.capacity}")
        if self.split_by_size:
            if self.capacity < 2:
                raise bad("capacity", "a pool split by size needs >= 2 slots (one for each size class)")
            if self.long_capacity is not None and not 1 <= self.long_capacity < self.capacity:
                raise bad("long_capacity", f"must be between 1 and capacity - 1 ({self.capacity - 1}), got {self.long_capacity}")
        elif self.long_capacity is not None:
            raise bad("long_capacity", "only a pool split by size has a long-prompt share")
        if not self.tiers:
            raise bad("tiers", "a pool must serve at least one tenant tier")
        unknown = [tier for tier in self.tiers if tier not in TENANT_TIERS]
        if unknown:
            raise bad("tiers", f"unknown tier(s) {unknown}; tiers are {', '.join(TENANT_TIERS)}")
        if not (0 < self.tenant_share <= 1):
            raise bad("tenant_share", f"must be in (0, 1], got {self.tenant_share}")

    def fits(self, tokens: int) -> bool:
        """Whether `tokens` (prompt plus room for the answer) fit the context window."""
        return self.context_tokens is None or tokens <= self.context_tokens

    def capacity_for(self, size_class: SizeClass) -> int:
        """The in-flight slots of one size class: long prompts get their share, short ones the rest."""
        if not self.split_by_size:
            return self.capacity
        long_slots = self.long_capacity if self.long_capacity is not None else max(1, self.capacity // 4)
        return long_slots if size_class == "long" else self.capacity - long_slots

    def topic(self, size_class: SizeClass) -> str:
        """Where the pool's requests of this size class queue."""
        return inference_topic_for(self.name, size_class) if self.split_by_size else inference_topic(self.name)

    def topics(self) -> tuple[str, ...]:
        """Every topic the pool's workers consume: one per size class, or the pool's single topic."""
        return tuple(dict.fromkeys(self.topic(size) for size in SIZE_CLASSES))


@dataclass(frozen=True, kw_only=True)
class RoutingPolicy:
    """Thresholds on a run's size: which queue it waits in, and when it is long work for a batch pool."""

    short_prompt_max_tokens: int = DEFAULT_SHORT_PROMPT_MAX_TOKENS  # prompts up to this many tokens are "short"
    long_work_prompt_tokens: int = 32_768  # a prompt beyond this is long work
    long_work_output_tokens: int = 4_096  # asking for more output than this is long work

    def __post_init__(self) -> None:
        for name in ("short_prompt_max_tokens", "long_work_prompt_tokens", "long_work_output_tokens"):
            if getattr(self, name) < 1:
                raise PoolsFileError(source="routing", field=name, problem=f"must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class BreakerPolicy:
    """When a pool's breaker opens, how long it stays open, and how it probes before closing again."""

    consecutive_failures: int = 5  # this many failures in a row open it
    failure_rate: float = 0.5  # or this share of failures over the window ...
    min_calls: int = 20  # ... once the window holds at least this many outcomes
    window_s: float = 60.0
    cool_down_s: float = 30.0  # open this long, then half-open
    half_open_probes: int = 1  # runs let through while half-open
    probe_timeout_s: float = 120.0  # a probe with no outcome by then counts as failed

    def __post_init__(self) -> None:
        def bad(field_name: str, problem: str) -> PoolsFileError:
            return PoolsFileError(source="breaker", field=field_name, problem=problem)

        for name in ("consecutive_failures", "min_calls", "half_open_probes"):
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("window_s", "cool_down_s", "probe_timeout_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise bad(name, f"must be a finite number > 0, got {value}")
        if not (0 < self.failure_rate <= 1):
            raise bad("failure_rate", f"must be in (0, 1], got {self.failure_rate}")


@dataclass(frozen=True, kw_only=True)
class TenantTiers:
    """Which tier each org pays for (pools serve some tiers only); orgs not named get `default_tier`."""

    default_tier: TenantTier = "free"
    orgs: Mapping[str, TenantTier] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default_tier not in TENANT_TIERS:
            raise PoolsFileError(source="tenants", field="default_tier", problem=f"unknown tier {self.default_tier!r}; tiers are {', '.join(TENANT_TIERS)}")
        for org_id, tier in self.orgs.items():
            if tier not in TENANT_TIERS:
                raise PoolsFileError(source="tenants", field=f"orgs.{org_id}", problem=f"unknown tier {tier!r}; tiers are {', '.join(TENANT_TIERS)}")

    def tier_of(self, org_id: str) -> TenantTier:
        return self.orgs.get(org_id, self.default_tier)


@dataclass(frozen=True, kw_only=True)
class PoolsConfig:
    """The pools a deployment routes over (file order breaks ties in price), with its thresholds."""

    pools: tuple[PoolConfig, ...]
    policy: RoutingPolicy = field(default_factory=RoutingPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    tenants: TenantTiers = field(default_factory=TenantTiers)

    def __post_init__(self) -> None:
        if not self.pools:
            raise PoolsFileError(source="pools", field="pools", problem="at least one pool is needed")
        seen: set[str] = set()
        for index, pool in enumerate(self.pools):
            if pool.name in seen:
                raise PoolsFileError(source="pools", field=f"pools[{index}].name", problem=f"pool {pool.name!r} is named twice")
            seen.add(pool.name)

    def pool(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(f"no pool named {name!r}; pools are {', '.join(pool.name for pool in self.pools)}")

    def topics(self) -> tuple[str, ...]:
        """Every inference topic of every pool (for provisioning and for workers to subscribe)."""
        return tuple(topic for pool in self.pools for topic in pool.topics())


def default_pools(
    *,
    engine: EngineKind = "cpu",
    engine_url: str | None = None,
    engine_model: str | None = None,
    capacity: int = 1,
    context_tokens: int | None = None,
) -> PoolsConfig:
    """turnlog before pools: one interactive pool on one topic (`inference-requests.interactive`), every
    tier, tools on, any prompt size sent on (the engine refuses what does not fit its window)."""
    pool = PoolConfig(
        name=DEFAULT_POOL,
        engine=engine,
        engine_url=engine_url,
        engine_model=engine_model,
        context_tokens=context_tokens,
        capacity=capacity,
        split_by_size=False,
    )
    # Long work has no batch pool to go to here, so it falls back to this one, as every run did.
    return PoolsConfig(pools=(pool,))


# --- the pools file -------------------------------------------------------------------------------

_POOL_KEYS: Mapping[str, str] = {
    # key -> kind of value: str, int, number, bool, tiers
    "name": "str", "engine": "str", "engine_url": "str", "engine_model": "str", "engine_api_key_env": "str",
    "engine_tool_parser": "str", "context_tokens": "int", "latency_tier": "str", "cost_per_1k_tokens": "number", "capacity": "int",
    "long_capacity": "int", "split_by_size": "bool", "supports_tools": "bool", "tiers": "tiers",
    "tenant_share": "number",
}
_REQUIRED_POOL_KEYS = ("name", "engine", "context_tokens", "capacity")
_ROUTING_KEYS: Mapping[str, str] = {
    "short_prompt_max_tokens": "int", "long_work_prompt_tokens": "int", "long_work_output_tokens": "int",
}
_BREAKER_KEYS: Mapping[str, str] = {
    "consecutive_failures": "int", "failure_rate": "number", "min_calls": "int", "window_s": "number",
    "cool_down_s": "number", "half_open_probes": "int", "probe_timeout_s": "number",
}


def parse_pools(text: str | bytes, *, source: str = "pools.toml") -> PoolsConfig:
    """A pools file's configuration; `PoolsFileError` names the field at fault (`pools[1].capacity`)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise PoolsFileError(source=source, field="", problem=f"not UTF-8: {error}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PoolsFileError(source=source, field="", problem=f"not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"pools", "routing", "breaker", "tenants"})
    if unknown:
        raise PoolsFileError(
            source=source, field=unknown[0], problem="unknown section; sections are [[pools]], [routing], [breaker], [tenants]"
        )
    entries = document.get("pools")
    if not isinstance(entries, list) or not entries:
        raise PoolsFileError(source=source, field="pools", problem="declare at least one pool as a [[pools]] table")
    pools = []
    for index, entry in enumerate(entries):
        where = f"pools[{index}]"
        if not isinstance(entry, dict):
            raise PoolsFileError(source=source, field=where, problem="each pool is a [[pools]] table")
        values = _read_table(entry, _POOL_KEYS, source=source, where=where)
        missing = [key for key in _REQUIRED_POOL_KEYS if key not in values]
        if missing:
            raise PoolsFileError(source=source, field=f"{where}.{missing[0]}", problem="required")
        pools.append(_build(PoolConfig, values, source=source, where=where))
    routing = _build(RoutingPolicy, _read_table(_section(document, "routing", source), _ROUTING_KEYS, source=source, where="routing"), source=source, where="routing")
    breaker = _build(BreakerPolicy, _read_table(_section(document, "breaker", source), _BREAKER_KEYS, source=source, where="breaker"), source=source, where="breaker")
    tenants = _tenants(_section(document, "tenants", source), source=source)
    return _build(PoolsConfig, {"pools": tuple(pools), "policy": routing, "breaker": breaker, "tenants": tenants}, source=source, where="")


def _tenants(table: Mapping[str, object], *, source: str) -> TenantTiers:
    """`[tenants]`: `default_tier = "free"` and `orgs = { org_acme = "enterprise" }`."""
    unknown = sorted(set(table) - {"default_tier", "orgs"})
    if unknown:
        raise PoolsFileError(source=source, field=f"tenants.{unknown[0]}", problem="unknown key; keys are default_tier, orgs")
    default_tier = table.get("default_tier", "free")
    if not isinstance(default_tier, str):
        raise PoolsFileError(source=source, field="tenants.default_tier", problem=f"must be a tier name, got {default_tier!r}")
    orgs = table.get("orgs", {})
    if not isinstance(orgs, dict) or not all(isinstance(tier, str) for tier in orgs.values()):
        raise PoolsFileError(source=source, field="tenants.orgs", problem='a table of org id = tier name, e.g. { org_acme = "pro" }')
    return _build(TenantTiers, {"default_tier": default_tier, "orgs": dict(orgs)}, source=source, where="tenants")


def _section(document: Mapping[str, object], name: str, source: str) -> Mapping[str, object]:
    section = document.get(name, {})
    if not isinstance(section, dict):
        raise PoolsFileError(source=source, field=name, problem=f"[{name}] is a table")
    return section


def _read_table(table: Mapping[str, object], keys: Mapping[str, str], *, source: str, where: str) -> dict[str, object]:
    """The table's values, each checked against the kind its key takes; unknown keys are refused (typos)."""
    values: dict[str, object] = {}
    for key, value in table.items():
        name = f"{where}.{key}"
        kind = keys.get(key)
        if kind is None:
            raise PoolsFileError(source=source, field=name, problem=f"unknown key; keys are {', '.join(keys)}")
        # bool is an int in Python; TOML's `true` is not a number here.
        if kind == "str" and not isinstance(value, str):
            raise PoolsFileError(source=source, field=name, problem=f"must be a string, got {value!r}")
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise PoolsFileError(source=source, field=name, problem=f"must be an integer, got {value!r}")
        if kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise PoolsFileError(source=source, field=name, problem=f"must be a number, got {value!r}")
        if kind == "bool" and not isinstance(value, bool):
            raise PoolsFileError(source=source, field=name, problem=f"must be true or false, got {value!r}")
        if kind == "tiers":
            if not isinstance(value, list) or not all(isinstance(tier, str) for tier in value):
                raise PoolsFileError(source=source, field=name, problem=f"must be a list of tier names, got {value!r}")
            value = tuple(value)
        values[key] = float(value) if kind == "number" else value
    return values


def _build(cls, values: dict[str, object], *, source: str, where: str):
    """`cls(**values)`, its own validation error re-raised with the file's name and the field's full path."""
    try:
        return cls(**values)
    except PoolsFileError as error:
        field_path = f"{where}.{error.field}" if where and error.field else (error.field or where)
        raise PoolsFileError(source=source, field=field_path, problem=error.problem) from None
