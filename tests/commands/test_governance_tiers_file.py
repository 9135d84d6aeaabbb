"""The tiers file: the example parses, and every mistake names its line and field."""

from pathlib import Path

import pytest

from commands.governance.tiers_file import (
    AbusePolicy,
    GovernanceConfig,
    Limits,
    Price,
    Tier,
    TierError,
    TiersFileError,
    parse_tiers_file,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "tiers.example.toml"


def test_the_example_parses_and_documents_every_key() -> None:
    config = parse_tiers_file(EXAMPLE.read_text())
    assert set(config.tiers) == {"free", "pro", "enterprise"}
    free = config.tiers["free"]
    assert free == Tier(
        name="free", credits=True, start_balance=2000, monthly_refill=2000, monthly_token_budget=2_000_000,
        reservation_units=20, user=Limits(requests_per_minute=20, tokens_per_minute=40_000, concurrent_runs=2),
        org=Limits(requests_per_minute=100, tokens_per_minute=200_000, concurrent_runs=10),
    )
    assert config.tiers["enterprise"].credits is False
    assert config.tiers["enterprise"].user == Limits(requests_per_minute=120, concurrent_runs=8)
    assert config.tier_of("org_acme").name == "enterprise"
    assert config.tier_of("org_nobody").name == "free"
    assert config.price_of("small") == Price(prompt=1, cached=0, output=3)
    assert config.price_of("batch") == Price(prompt=2, cached=1, output=6)  # [prices.default]
    assert config.abuse.points_for("sandbox_escape") == 10 and config.abuse.points_for("spam") == 3
    assert config.admission.reservation_ttl_s == 86_400 and config.edge.requests_per_minute == 60
    text = EXAMPLE.read_text()
    for key in ("credits", "start_balance", "monthly_refill", "monthly_token_budget", "reservation_units",
                "requests_per_minute", "tokens_per_minute", "concurrent_runs", "prompt", "cached", "output",
                "threshold", "half_life_s", "suspension_s", "rate_limited", "flagged_input", "sandbox_escape",
                "reservation_ttl_s", "concurrency_retry_after_s", "default_tier", "orgs"):
        assert f"{key} =" in text, key


def test_a_minimal_file() -> None:
    config = parse_tiers_file("[tiers.basic]\nstart_balance = 10\n")
    assert config.default_tier == "basic"
    assert config.tier_of("anyone") == Tier(name="basic", start_balance=10)
    assert config.abuse == AbusePolicy() and config.prices == {}
    assert config.unpriced(["small", "large"]) == ("small", "large")


def test_without_a_file_nothing_is_limited_and_credits_are_not_needed() -> None:
    tier = GovernanceConfig().tier_of("org_any")
    assert tier.credits is False and tier.user == Limits() and tier.org == Limits()


def test_the_pools_file_tenants_can_be_reused() -> None:
    config = parse_tiers_file(EXAMPLE.read_text()).with_tenants({"org_new": "pro"}, default_tier="free")
    assert config.tier_of("org_new").name == "pro" and config.tier_of("org_acme").name == "free"
    with pytest.raises(TiersFileError, match="tenants.orgs.org_x: no tier named 'gold'"):
        config.with_tenants({"org_x": "gold"})


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [
        ("[tiers.free]\nstart_balance = 10\n\n[tiers.free.user]\nrequests_per_minute = \"many\"\n",
         5, "tiers.free.user.requests_per_minute", 'must be an integer >= 1, got "many"'),
        ("[tiers.free]\nmonthly_refill = -1\n", 2, "tiers.free.monthly_refill", "must be an integer >= 0, got -1"),
        ("[tiers.free]\ncredits = 1\n", 2, "tiers.free.credits", "must be true or false, got 1"),
        ("[tiers.free]\nreservation_units = true\n", 2, "tiers.free.reservation_units", "must be an integer >= 0, got true"),
        ("[tiers.free]\n\n[tiers.free.user]\nrpm = 3\n", 4, "tiers.free.user.rpm",
         "unknown key; keys are requests_per_minute, tokens_per_minute, concurrent_runs"),
        ("[tiers.Free]\n", 1, "tiers.Free", "a tier name is 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit"),
        ("[tenants]\ndefault_tier = \"gold\"\n\n[tiers.free]\n", 2, "tenants.default_tier", "no tier named 'gold'; tiers are free"),
        ("[tenants]\norgs = { org_a = \"free\", org_b = \"gold\" }\n[tiers.free]\n", 2, "tenants.orgs.org_b",
         "no tier named 'gold'; tiers are free"),
        ("[tiers.free]\n[prices.small]\nprompt = 1\noutput = 2.5\n", 4, "prices.small.output", "must be an integer >= 0, got 2.5"),
        ("[tiers.free]\n[abuse]\nthreshold = 0\n", 3, "abuse.threshold", "must be a finite number > 0, got 0"),
        ("[tiers.free]\n[abuse.points]\nspam = -1\n", 3, "abuse.points.spam", "must be a finite number >= 0, got -1"),
        ("[tiers.free]\n[admission]\nreservation_ttl_s = \"1d\"\n", 3, "admission.reservation_ttl_s",
         'must be a finite number > 0, got "1d"'),
        ("[tiers.free]\n[edge]\nrequests_per_minute = 0\n", 3, "edge.requests_per_minute", "must be an integer >= 1, got 0"),
        ("[tier.free]\n", 1, "tier", "unknown section; sections are tenants, tiers, prices, abuse, admission, edge"),
        ("[tenants]\ndefault_tier = \"free\"\n", None, "tiers", "declare at least one tier, e.g. [tiers.free]"),
        ("tiers = 3\n", 1, "tiers", "must be a table, got 3"),
        # Dotted keys and inline tables are found too; a missing key points at its table.
        ("[tiers]\nfree.user.concurrent_runs = 0\n", 2, "tiers.free.user.concurrent_runs", "must be an integer >= 1, got 0"),
        ("[tiers.free]\nuser = { requests_per_minute = 5, concurrent_runs = \"2\" }\n", 2, "tiers.free.user.concurrent_runs",
         'must be an integer >= 1, got "2"'),
    ],
)
def test_a_mistake_names_its_line_and_field(text: str, line: int | None, field: str, problem: str) -> None:
    with pytest.raises(TiersFileError) as caught:
        parse_tiers_file(text, source="tiers.toml")
    error = caught.value
    assert (error.line, error.field, error.problem) == (line, field, problem)
    assert str(error) == f"tiers.toml{'' if line is None else f':{line}'}: {field}: {problem}"


def test_invalid_toml_names_its_line() -> None:
    with pytest.raises(TiersFileError) as caught:
        parse_tiers_file("[tiers.free]\nstart_balance = = 3\n")
    assert caught.value.line == 2 and caught.value.problem.startswith("not valid TOML")


def test_bytes_that_are_not_utf8() -> None:
    with pytest.raises(TiersFileError, match="not UTF-8"):
        parse_tiers_file(b"\xff\xfe")


def test_a_config_built_in_code_is_checked_too() -> None:
    with pytest.raises(TierError, match="tenants.default_tier"):
        GovernanceConfig(tiers={"pro": Tier(name="pro")}, default_tier="free")
