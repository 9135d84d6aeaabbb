"""`turnlog serve`'s single sign-on settings: the OIDC file and the `--oidc-*` options (which win), checked at start."""

import os
from pathlib import Path

import pytest

from turnlog import cli
from turnlog.extras import required_extras
from turnlog.oidc import OidcFileError, oidc_config, parse_oidc_file
from turnlog.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "oidc.example.toml"
MINIMAL = ["--oidc-issuer", "https://id.example.com", "--oidc-audience", "turnlog", "--oidc-org", "acme"]


@pytest.fixture(autouse=True)
def no_turnlog_environment(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("TURNLOG_"):
            monkeypatch.delenv(name)


@pytest.fixture
def served(monkeypatch) -> dict:
    """What `turnlog serve` would start with, without starting it."""
    captured: dict = {}
    monkeypatch.setattr(cli, "_serve", lambda arguments, settings: captured.update(settings=settings) or 0)
    return captured


def failure(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_without_oidc_settings_only_turnlogs_tokens_are_accepted(served) -> None:
    assert cli.main(["serve"]) == 0
    assert served["settings"].oidc is None


def test_the_example_file_is_a_whole_configuration(served) -> None:
    assert cli.main(["serve", "--oidc-config", str(EXAMPLE)]) == 0
    config = served["settings"].oidc
    assert (config.issuer, config.audience, config.jwks_url) == ("https://id.example.com/realms/acme", "turnlog", None)
    assert (config.user_claim, config.org_claim, config.org) == ("sub", "org", None)
    assert (config.workspaces_claim, config.default_workspaces) == ("turnlog_workspaces", ("general",))
    assert (config.role_claim, config.admin_values, config.jwks_cooldown_s) == ("groups", ("turnlog-admins",), 30.0)
    assert [requirement.extra for requirement in required_extras(served["settings"], api=True)].count("oidc") == 1
    assert "oidc" not in [requirement.extra for requirement in required_extras(Settings(), api=True)]


def test_options_win_over_the_file_and_repeat_for_lists(tmp_path: Path, served) -> None:
    file = tmp_path / "oidc.toml"
    file.write_text('issuer = "https://id.example.com"\naudience = "from-file"\norg_claim = "org"\nworkspaces_claim = "ws"\njwks_cooldown_s = 5\n')
    argv = [
        "serve", "--oidc-config", str(file), "--oidc-audience", "from-option", "--oidc-default-workspace", "general",
        "--oidc-default-workspace", "random", "--oidc-role-claim", "roles", "--oidc-admin-value", "admins",
    ]
    assert cli.main(argv) == 0
    config = served["settings"].oidc
    assert (config.audience, config.org_claim, config.workspaces_claim) == ("from-option", "org", "ws")
    assert (config.default_workspaces, config.admin_values, config.jwks_cooldown_s) == (("general", "random"), ("admins",), 5.0)


def test_the_environment_sets_every_option(monkeypatch, served) -> None:
    monkeypatch.setenv("TURNLOG_OIDC_ISSUER", "http://127.0.0.1:9999")
    monkeypatch.setenv("TURNLOG_OIDC_AUDIENCE", "turnlog")
    monkeypatch.setenv("TURNLOG_OIDC_ORG", "acme")
    monkeypatch.setenv("TURNLOG_OIDC_DEFAULT_WORKSPACE", "ws_a, ws_b")
    monkeypatch.setenv("TURNLOG_OIDC_JWKS_COOLDOWN_S", "2.5")
    assert cli.main(["serve"]) == 0
    config = served["settings"].oidc
    assert (config.issuer, config.org, config.default_workspaces, config.jwks_cooldown_s) == (
        "http://127.0.0.1:9999", "acme", ("ws_a", "ws_b"), 2.5,
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--oidc-audience", "turnlog"], "OIDC settings without an issuer: give --oidc-issuer, or issuer in the OIDC file"),
        (["--oidc-issuer", "https://id.example.com", "--oidc-org", "acme"], "OIDC: audience (--oidc-audience) is required"),
        ([*MINIMAL], "OIDC: name the workspaces of the provider's users"),
        ([*MINIMAL, "--oidc-default-workspace", "ws", "--oidc-issuer", "http://id.example.com"], "OIDC: issuer (--oidc-issuer) must be an https:// URL"),
        ([*MINIMAL, "--oidc-default-workspace", "ws", "--oidc-org-claim", "org"], "OIDC: name the org of the provider's users"),
        ([*MINIMAL, "--oidc-jwks-cooldown-s", "-1"], "argument --oidc-jwks-cooldown-s: must be a number >= 0, got '-1'"),
    ],
)
def test_settings_that_cannot_work_stop_serve_in_one_line(argv, expected, served, capsys) -> None:
    assert failure(capsys, "serve", *argv).startswith(f"turnlog serve: error: {expected}")
    assert "settings" not in served


def test_a_broken_oidc_file_stops_serve_naming_its_line(tmp_path: Path, served, capsys) -> None:
    file = tmp_path / "oidc.toml"
    file.write_text('issuer = "https://id.example.com"\naudience = "turnlog"\n\norgs_claim = "org"\n')
    assert failure(capsys, "serve", "--oidc-config", str(file)) == (
        f"turnlog serve: error: {file}:4: orgs_claim: unknown key; keys are issuer, audience, jwks_url, user_claim,"
        " org_claim, org, workspaces_claim, default_workspaces, role_claim, admin_values, jwks_cooldown_s,"
        " jwks_max_age_s, fetch_timeout_s"
    )
    missing = tmp_path / "absent.toml"
    assert failure(capsys, "serve", "--oidc-config", str(missing)).startswith(
        f"turnlog serve: error: cannot read the OIDC file '{missing}'"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('admin_values = "admins"', "oidc.toml:1: admin_values: must be a list of strings, got 'admins'"),
        ("\naudience = 7", "oidc.toml:2: audience: must be a string, got 7"),
        ("jwks_cooldown_s = true", "oidc.toml:1: jwks_cooldown_s: must be a number of seconds, got True"),
        ("issuer = \"x\"\nissuer = \"y\"\n", "oidc.toml:2: not valid TOML: Cannot overwrite a value (column 13)"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_line_and_key(text, problem) -> None:
    with pytest.raises(OidcFileError) as caught:
        parse_oidc_file(text)
    assert str(caught.value) == problem


def test_other_commands_have_no_oidc_settings() -> None:
    arguments = cli.build_parser().parse_args(["serve", *MINIMAL, "--oidc-default-workspace", "ws"])
    assert oidc_config(arguments).org == "acme"
    assert not any(name.startswith("oidc") for name in vars(cli.build_parser().parse_args(["worker", "--role", "decider"])))
