"""Pools configuration: the pools file and its errors, the default pool, topics and capacities per size class."""

from __future__ import annotations

from pathlib import Path

import pytest

from events.topics import INFERENCE_REQUESTS_PREFIX, inference_topic, inference_topic_for
from events.topology import turnlog_topics
from inference.pools import (
    DEFAULT_POOL,
    TENANT_TIERS,
    BreakerPolicy,
    PoolConfig,
    PoolsConfig,
    PoolsFileError,
    RoutingPolicy,
    default_pools,
    parse_pools,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "pools.example.toml"

MINIMAL_POOL = """
[[pools]]
name = "small"
engine = "scripted"
context_tokens = 8192
capacity = 8
"""


def pool(**overrides) -> PoolConfig:
    fields = {"name": "small", "engine": "scripted", "context_tokens": 8192, "capacity": 8} | overrides
    return PoolConfig(**fields)


# --- the example file and the minimal one -------------------------------------------------------


def test_the_example_pools_file_parses_with_every_section():
    config = parse_pools(EXAMPLE.read_text(), source=EXAMPLE.name)

    assert [p.name for p in config.pools] == ["small", "large", "batch"]
    small = config.pool("small")
    assert small.engine == "openai-compatible"
    assert small.engine_url == "http://sglang-small:30000/v1"
    assert small.engine_api_key_env == "TURNLOG_POOL_SMALL_API_KEY"
    assert (small.context_tokens, small.capacity, small.long_capacity) == (32768, 64, 16)
    assert small.tiers == TENANT_TIERS and small.tenant_share == 0.25
    assert config.pool("large").tiers == ("pro", "enterprise")
    batch = config.pool("batch")
    assert (batch.latency_tier, batch.supports_tools, batch.split_by_size) == ("batch", False, False)
    assert config.breaker.half_open_probes == 2
    assert config.policy == RoutingPolicy(
        short_prompt_max_tokens=4096, long_work_prompt_tokens=32768, long_work_output_tokens=4096
    )


def test_a_pool_needs_only_name_engine_context_and_capacity():
    config = parse_pools(MINIMAL_POOL)

    [small] = config.pools
    assert small == pool()
    assert (small.latency_tier, small.supports_tools, small.split_by_size, small.cost_per_1k_tokens) == (
        "interactive", True, True, 0.0,
    )
    assert config.policy == RoutingPolicy() and config.breaker == BreakerPolicy()


def test_pools_files_are_read_from_bytes_too():
    assert parse_pools(MINIMAL_POOL.encode()) == parse_pools(MINIMAL_POOL)


def test_integer_numbers_are_accepted_where_a_number_is_expected():
    config = parse_pools(MINIMAL_POOL + "cost_per_1k_tokens = 1\ntenant_share = 1\n")

    assert config.pools[0].cost_per_1k_tokens == 1.0 and isinstance(config.pools[0].cost_per_1k_tokens, float)


# --- errors name the field at fault ----------------------------------------------------------------

POOL_HEAD = '[[pools]]\nname = "small"\nengine = "scripted"\ncontext_tokens = 8192\n'


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (POOL_HEAD, "pools[0].capacity", "required"),
        (POOL_HEAD + "capacity = 0\n", "pools[0].capacity", ">= 1"),
        (POOL_HEAD + "capacity = 1\n", "pools[0].capacity", ">= 2 slots (one for each size class)"),
        (POOL_HEAD + "capacity = 1\nsplit_by_size = false\ncapacity_typo = 3\n", "pools[0].capacity_typo", "unknown key"),
        (POOL_HEAD + "capacity = true\n", "pools[0].capacity", "must be an integer"),
        (POOL_HEAD + 'capacity = "8"\n', "pools[0].capacity", "must be an integer"),
        (POOL_HEAD + "capacity = 8\nlong_capacity = 8\n", "pools[0].long_capacity", "between 1 and capacity - 1"),
        (POOL_HEAD + "capacity = 8\nsplit_by_size = false\nlong_capacity = 2\n", "pools[0].long_capacity", "split by size"),
        (POOL_HEAD + 'capacity = 8\nlatency_tier = "fast"\n', "pools[0].latency_tier", "unknown latency tier"),
        (POOL_HEAD + 'capacity = 8\ntiers = ["free", "gold"]\n', "pools[0].tiers", "unknown tier"),
        (POOL_HEAD + "capacity = 8\ntiers = []\n", "pools[0].tiers", "at least one"),
        (POOL_HEAD + "capacity = 8\ntiers = \"free\"\n", "pools[0].tiers", "list of tier names"),
        (POOL_HEAD + "capacity = 8\ncost_per_1k_tokens = -1\n", "pools[0].cost_per_1k_tokens", ">= 0"),
        (POOL_HEAD + "capacity = 8\ncost_per_1k_tokens = nan\n", "pools[0].cost_per_1k_tokens", "finite"),
        (POOL_HEAD + "capacity = 8\ntenant_share = 0\n", "pools[0].tenant_share", "(0, 1]"),
        (POOL_HEAD + "capacity = 8\nsupports_tools = 1\n", "pools[0].supports_tools", "true or false"),
        (POOL_HEAD + "capacity = 8\n" + POOL_HEAD + "capacity = 8\n", "pools[1].name", "named twice"),
        (POOL_HEAD.replace('"small"', '"Small.pool"') + "capacity = 8\n", "pools[0].name", "pool name"),
        (POOL_HEAD.replace('"scripted"', '"vllm"') + "capacity = 8\n", "pools[0].engine", "unknown engine"),
        (POOL_HEAD.replace('"scripted"', '"openai-compatible"') + 'capacity = 8\nengine_model = "m"\n', "pools[0].engine_url", "needs the server's URL"),
        (POOL_HEAD.replace('"scripted"', '"openai-compatible"') + 'capacity = 8\nengine_model = "m"\nengine_url = "sglang:30000"\n', "pools[0].engine_url", "http(s) URL"),
        (POOL_HEAD.replace('"scripted"', '"sglang"') + "capacity = 8\n", "pools[0].engine_model", "needs the model"),
        (POOL_HEAD + 'capacity = 8\nengine_url = "http://x"\n', "pools[0].engine_url", "only openai-compatible"),
        (POOL_HEAD + 'capacity = 8\nengine_model = "m"\n', "pools[0].engine_model", "fixed model"),
        (POOL_HEAD + 'capacity = 8\nengine_api_key_env = "K"\n', "pools[0].engine_api_key_env", "API key"),
        (POOL_HEAD.replace("8192", "0") + "capacity = 8\n", "pools[0].context_tokens", ">= 1"),
        (MINIMAL_POOL + "[routing]\nshort_prompt_max_tokens = 0\n", "routing.short_prompt_max_tokens", ">= 1"),
        (MINIMAL_POOL + "[routing]\nshort_prompts = 10\n", "routing.short_prompts", "unknown key"),
        (MINIMAL_POOL + "[breaker]\nfailure_rate = 2\n", "breaker.failure_rate", "(0, 1]"),
        (MINIMAL_POOL + "[breaker]\ncool_down_s = 0\n", "breaker.cool_down_s", "> 0"),
        (MINIMAL_POOL + "[breaker]\nhalf_open_probes = 0\n", "breaker.half_open_probes", ">= 1"),
        ("breaker = 3\n" + MINIMAL_POOL, "breaker", "is a table"),
        (MINIMAL_POOL + "[pool_defaults]\ncapacity = 3\n", "pool_defaults", "unknown section"),
        ("[routing]\nshort_prompt_max_tokens = 10\n", "pools", "at least one pool"),
        ("pools = [1, 2]\n", "pools[0]", "[[pools]] table"),
        (MINIMAL_POOL + '[tenants]\ndefault_tier = "gold"\n', "tenants.default_tier", "unknown tier"),
        (MINIMAL_POOL + '[tenants]\norgs = { org_a = "gold" }\n', "tenants.orgs.org_a", "unknown tier"),
        (MINIMAL_POOL + '[tenants]\norgs = ["org_a"]\n', "tenants.orgs", "org id = tier name"),
        (MINIMAL_POOL + '[tenants]\ntier = "pro"\n', "tenants.tier", "unknown key"),
    ],
)
def test_a_bad_pools_file_names_the_field_at_fault(text, field, words):
    with pytest.raises(PoolsFileError) as raised:
        parse_pools(text, source="pools.toml")

    assert raised.value.field == field
    assert words in raised.value.problem
    assert str(raised.value).startswith(f"pools.toml: {field}: ")


def test_a_pools_file_that_is_not_toml_says_so_with_the_line():
    with pytest.raises(PoolsFileError) as raised:
        parse_pools("[[pools]\nname = 'x'\n", source="/etc/turnlog/pools.toml")

    assert raised.value.field == ""
    assert "not valid TOML" in str(raised.value) and "line 1" in str(raised.value)
    assert str(raised.value).startswith("/etc/turnlog/pools.toml: not valid TOML")


def test_a_pools_file_that_is_not_utf8_says_so():
    with pytest.raises(PoolsFileError, match="not UTF-8"):
        parse_pools(b"\xff\xfe[[pools]]")


def test_a_pool_built_in_code_is_checked_the_same_way():
    with pytest.raises(PoolsFileError) as raised:
        pool(capacity=0)

    assert raised.value.field == "capacity"


def test_a_config_without_pools_is_refused():
    with pytest.raises(PoolsFileError, match="at least one pool"):
        PoolsConfig(pools=())


def test_looking_up_an_unknown_pool_names_the_known_ones():
    with pytest.raises(KeyError, match="small"):
        parse_pools(MINIMAL_POOL).pool("large")


# --- the default: today's single pool --------------------------------------------------------------


def test_the_default_is_todays_single_interactive_pool_on_its_single_topic():
    config = default_pools(engine="scripted", capacity=4)

    [only] = config.pools
    assert only.name == DEFAULT_POOL == "interactive"
    assert only.topics() == (inference_topic("interactive"),) == ("inference-requests.interactive",)
    assert only.topic("short") == only.topic("long") == "inference-requests.interactive"
    assert only.capacity_for("short") == only.capacity_for("long") == 4
    assert only.tiers == TENANT_TIERS and only.supports_tools and only.latency_tier == "interactive"
    assert only.context_tokens is None and only.fits(10**9)  # the engine alone refuses what does not fit


def test_the_default_pool_can_name_a_remote_engine():
    config = default_pools(engine="openai-compatible", engine_url="http://sglang:30000/v1", engine_model="Qwen", capacity=16)

    assert config.pools[0].engine_url == "http://sglang:30000/v1" and config.pools[0].capacity == 16


# --- topics and capacity per size class ------------------------------------------------------------


def test_a_pool_split_by_size_has_one_topic_per_size_class():
    small = pool()

    assert small.topics() == ("inference-requests.small.short", "inference-requests.small.long")
    assert small.topic("long") == inference_topic_for("small", "long")
    assert inference_topic("small") == "inference-requests.small"  # the pool's old topic keeps its name


def test_every_pool_topic_is_provisioned_by_the_inference_requests_spec():
    config = parse_pools(EXAMPLE.read_text())
    specs = turnlog_topics()

    assert all(topic.startswith(INFERENCE_REQUESTS_PREFIX) for topic in config.topics())
    assert all(specs.spec_for(topic) is specs.prefixed[INFERENCE_REQUESTS_PREFIX] for topic in config.topics())
    assert len(set(config.topics())) == len(config.topics()) == 5


@pytest.mark.parametrize(
    ("capacity", "long_capacity", "short_slots", "long_slots"),
    [(2, None, 1, 1), (8, None, 6, 2), (64, 16, 48, 16), (10, 9, 1, 9)],
)
def test_long_prompts_get_their_share_of_slots_and_short_ones_the_rest(capacity, long_capacity, short_slots, long_slots):
    split = pool(capacity=capacity, long_capacity=long_capacity)

    assert (split.capacity_for("short"), split.capacity_for("long")) == (short_slots, long_slots)


def test_fits_counts_prompt_and_answer_against_the_window():
    small = pool(context_tokens=1000)

    assert small.fits(1000) and not small.fits(1001)


def test_tenant_tiers_come_from_the_pools_file_and_unnamed_orgs_get_the_default():
    config = parse_pools(MINIMAL_POOL + '[tenants]\ndefault_tier = "pro"\norgs = { org_acme = "enterprise" }\n')
    assert config.tenants.tier_of("org_acme") == "enterprise"
    assert config.tenants.tier_of("org_other") == "pro"
    assert parse_pools(MINIMAL_POOL).tenants.tier_of("org_any") == "free"
