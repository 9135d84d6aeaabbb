"""One org-to-tier table for routing and governance: the tiers file's [tenants], else the pools file's."""

from pathlib import Path

import pytest

from turnlog.adapters import load_pools, load_tiers
from turnlog.settings import Settings

POOLS = """
[[pools]]
name = "interactive"
engine = "scripted"
context_tokens = 8192
latency_tier = "interactive"
tiers = ["free", "pro", "enterprise"]
cost_per_1k_tokens = 0.01
capacity = 4
"""
POOLS_TENANTS = '\n[tenants]\ndefault_tier = "free"\norgs = { org_acme = "enterprise" }\n'
TIERS = """
[tiers.free]
start_balance = 10
[tiers.pro]
start_balance = 100
[tiers.enterprise]
credits = false
"""


def settings(tmp_path: Path, *, pools: str | None, tiers: str) -> Settings:
    tiers_file = tmp_path / "tiers.toml"
    tiers_file.write_text(tiers)
    pools_file = None
    if pools is not None:
        pools_file = tmp_path / "pools.toml"
        pools_file.write_text(pools)
    return Settings(data_dir=tmp_path, engine="scripted", pools_file=pools_file, tiers_file=tiers_file)


def test_the_pools_files_tenants_set_governance_tiers_when_the_tiers_file_names_none(tmp_path) -> None:
    config = load_tiers(settings(tmp_path, pools=POOLS + POOLS_TENANTS, tiers=TIERS))
    assert config is not None
    assert config.tier_of("org_acme").name == "enterprise" and not config.tier_of("org_acme").credits
    assert config.tier_of("org_other").name == "free"


def test_the_tiers_files_own_tenants_are_used_without_a_pools_file_or_pools_tenants(tmp_path) -> None:
    tiers = TIERS + '\n[tenants]\norgs = { org_acme = "pro" }\n'
    assert load_tiers(settings(tmp_path, pools=None, tiers=tiers)).tier_of("org_acme").name == "pro"
    assert load_tiers(settings(tmp_path, pools=POOLS, tiers=tiers)).tier_of("org_acme").name == "pro"


def test_two_tenant_tables_must_agree(tmp_path) -> None:
    same = TIERS + '\n[tenants]\ndefault_tier = "free"\norgs = { org_acme = "enterprise" }\n'
    assert load_tiers(settings(tmp_path, pools=POOLS + POOLS_TENANTS, tiers=same)).tier_of("org_acme").name == "enterprise"

    different = TIERS + '\n[tenants]\norgs = { org_acme = "pro" }\n'
    with pytest.raises(ValueError, match=r"both have a \[tenants\] table and they differ"):
        load_tiers(settings(tmp_path, pools=POOLS + POOLS_TENANTS, tiers=different))


def test_a_pools_tier_the_tiers_file_does_not_define_is_refused_naming_both_files(tmp_path) -> None:
    only_free = '\n[tiers.free]\nstart_balance = 10\n'
    chosen = settings(tmp_path, pools=POOLS + POOLS_TENANTS, tiers=only_free)
    with pytest.raises(ValueError, match=r"pools\.toml: \[tenants\] tenants\.orgs\.org_acme: no tier named 'enterprise'.*tiers\.toml"):
        load_tiers(chosen)
    assert load_pools(chosen).tenants.tier_of("org_acme") == "enterprise"  # routing still reads its own table
