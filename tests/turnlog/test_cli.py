"""The `turnlog` command's options: each has a TURNLOG_* variable, and a bad value is one line, not a traceback."""

import argparse
import importlib.metadata
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from turnlog import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"TURNLOG_ENGINE_API_KEY": "sk-never-shown", "TURNLOG_SECRET": "s" * 40}


@pytest.fixture(autouse=True)
def no_turnlog_environment(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("TURNLOG_"):
            monkeypatch.delenv(name)


def command_parsers(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, read from `turnlog`'s own, so a new command or option is covered here too.

    A command with actions of its own (`credits grant`) is one entry per action, named by both words.
    """
    (commands,) = [
        action for action in (parser or cli.build_parser())._actions if isinstance(action, argparse._SubParsersAction)
    ]
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name, command in commands.choices.items():
        nested = any(isinstance(action, argparse._SubParsersAction) for action in command._actions)
        parsers.update({f"{name} {action}": sub for action, sub in command_parsers(command).items()} if nested else {name: command})
    return parsers


def options_of(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if action.option_strings and action.dest != "help"]


def variable_of(action: argparse.Action) -> str:
    flag = max(action.option_strings, key=len)
    return "TURNLOG_" + flag.removeprefix("--").replace("-", "_").upper()


# Options whose values have a shape of their own: a sample each accepts.
SAMPLES = {
    "--cors-origins": "https://chat.example.com", "--param": "days=7", "--key-id": "0123456789abcdef",
    "--max-token-ttl-s": "3600",  # at least a minute
}


def sample_value(action: argparse.Action) -> str:
    """A value the option accepts that is not its default."""
    if max(action.option_strings, key=len) in SAMPLES:
        return SAMPLES[max(action.option_strings, key=len)]
    if action.nargs == 0:  # a switch: its variable would say yes
        return "1"
    return str(list(action.choices)[-1]) if action.choices else "7"


def given_as_a_flag(action: argparse.Action) -> str:
    flag = max(action.option_strings, key=len)
    return flag if action.nargs == 0 else f"{flag}={sample_value(action)}"


def failure(capsys, *argv: str) -> str:
    """The error `turnlog argv` exits with: status 2 and exactly one line on stderr."""
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_the_commands_are_serve_worker_token_replay_and_credits() -> None:
    credits = [f"credits {action}" for action in ("budget", "grant", "refill", "reinstate", "suspend")]
    keys = [f"keys {action}" for action in ("create", "list", "revoke")]
    assert sorted(command_parsers()) == [*credits, "erase", *keys, "replay", "reseal", "serve", "sql", "token", "worker"]


@pytest.mark.parametrize("command", sorted(command_parsers()))
def test_every_option_has_its_turnlog_variable(command, monkeypatch, capsys) -> None:
    options = options_of(command_parsers()[command])
    from_flags = cli.build_parser().parse_args([*command.split(), *map(given_as_a_flag, options)])
    for action in options:
        monkeypatch.setenv(variable_of(action), sample_value(action))
    from_environment = cli.build_parser().parse_args(command.split())

    for action in options:
        value = getattr(from_environment, action.dest)
        assert value != action.default and value == getattr(from_flags, action.dest), f"{variable_of(action)} unread"
    assert vars(from_environment) == vars(from_flags)
    shown = help_text(capsys, *command.split())
    missing = [variable_of(action) for action in options if f"env {variable_of(action)}" not in shown]
    assert not missing, f"`turnlog {command} --help` does not name {missing}"


def test_a_bad_port_in_the_environment_is_one_line_naming_the_option_even_with_help() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "turnlog.cli", "serve", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "TURNLOG_PORT": "abc"},
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.splitlines() == [
        "turnlog serve: error: TURNLOG_PORT (--port): must be an integer from 0 to 65535, got 'abc'"
    ]


def test_a_role_in_the_wrong_case_is_refused_with_the_accepted_roles(monkeypatch, capsys) -> None:
    monkeypatch.setenv("TURNLOG_ROLE", "API")
    error = failure(capsys, "serve")
    assert error.startswith("turnlog serve: error: TURNLOG_ROLE (--role): invalid choice: 'API'")
    assert re.search(r"\ball\b.*\bapi\b", error)
    error = failure(capsys, "serve", "--help")
    assert "TURNLOG_ROLE (--role)" in error


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["serve", "--port", "abc"], "argument --port: must be an integer from 0 to 65535, got 'abc'"),
        (["serve", "--port", "70000"], "argument --port: must be an integer from 0 to 65535, got '70000'"),
        (["serve", "--role", "API"], "argument --role: invalid choice: 'API'"),
        (["serve", "--engine", "CPU"], "argument --engine: invalid choice: 'CPU'"),
        (["serve", "--log-level", "INFO"], "argument --log-level: invalid choice: 'INFO'"),
        (["serve", "--run-lease-s", "0"], "argument --run-lease-s: must be a number > 0, got '0'"),
        (["serve", "--max-upload-mb", "nan"], "argument --max-upload-mb: must be a number > 0, got 'nan'"),
        (["worker", "--role", "Inference"], "argument --role: invalid choice: 'Inference'"),
        (["worker", "--engine-concurrency", "0"], "argument --engine-concurrency: must be an integer >= 1, got '0'"),
        (["worker", "--token-delay-ms", "-1"], "argument --token-delay-ms: must be a number >= 0, got '-1'"),
        (["token", "--ttl-s", "1h"], "argument --ttl-s: must be an integer >= 1, got '1h'"),
        (["replay", "--projection", "tables"], "argument --projection: invalid choice: 'tables'"),
        (["worker"], "the following arguments are required: --role"),
        (["worker", "--instance-id", "pod 0"], "argument --instance-id: must be 1-100 letters, digits, '.', '_' or '-', got 'pod 0'"),
    ],
)
def test_a_bad_flag_is_one_line_naming_the_option(argv, expected, capsys) -> None:
    error = failure(capsys, *argv)
    assert error.startswith(f"turnlog {argv[0]}: error: {expected}")


def test_an_instance_id_may_name_the_host(monkeypatch) -> None:
    """`{hostname}` is each replica's own name (a container's, a StatefulSet pod's): one setting for a scaled service."""
    monkeypatch.setattr(socket, "gethostname", lambda: "turnlog-worker-3")
    arguments = cli.build_parser().parse_args(["worker", "--role", "decider", "--instance-id", "{hostname}.a"])
    assert arguments.instance_id == "turnlog-worker-3.a"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TURNLOG_RUN_LEASE_S", "soon", "TURNLOG_RUN_LEASE_S (--run-lease-s): must be a number > 0, got 'soon'"),
        ("TURNLOG_ANSWER_TOKENS", "2.5", "TURNLOG_ANSWER_TOKENS (--answer-tokens): must be an integer >= 1, got '2.5'"),
        ("TURNLOG_ENGINE", "vllm", "TURNLOG_ENGINE (--engine): invalid choice: 'vllm'"),
        ("TURNLOG_ROLE", "decider,api", "TURNLOG_ROLE (--role): invalid choice: 'api'"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it_and_its_option(variable, value, expected, monkeypatch, capsys) -> None:
    monkeypatch.setenv(variable, value)
    assert failure(capsys, "worker", "--role", "inference").startswith(f"turnlog worker: error: {expected}")


def test_a_combination_the_settings_refuse_is_one_line_naming_the_option(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "_serve", lambda arguments, settings: pytest.fail("the server started"))
    error = failure(capsys, "serve", "--processor-runtime", "faust")
    assert error == "turnlog serve: error: --processor-runtime faust needs a Kafka log (--log kafka://host:9092)"


def test_a_secret_too_short_to_sign_with_is_one_line_without_the_secret(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TURNLOG_SECRET", "hunter2")
    assert cli.main(["token", "--user", "u", "--org", "o", "--workspace", "w", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["turnlog token: error: TURNLOG_SECRET must be at least 32 bytes long"]
    assert "hunter2" not in captured.out + captured.err


def test_token_refuses_a_lifetime_the_servers_would_refuse(tmp_path, monkeypatch, capsys) -> None:
    import jwt

    argv = ["token", "--user", "u", "--org", "o", "--workspace", "w", "--data-dir", str(tmp_path), "--ttl-s", "2592001"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [
        "turnlog token: error: --ttl-s 2592001 is longer than servers accept: at most 2592000 s (30 days,"
        " --max-token-ttl-s); ask for a shorter token, or raise TURNLOG_MAX_TOKEN_TTL_S for the servers and for this"
        " command alike"
    ]
    monkeypatch.setenv("TURNLOG_MAX_TOKEN_TTL_S", str(90 * 86400))  # raised for the servers, so for `token` too
    assert cli.main(argv) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 2592001


def test_serve_hands_the_token_lifetime_to_the_api_and_the_connection_limits_to_uvicorn(monkeypatch) -> None:
    from api.connections import BoundedHttpProtocol

    captured: dict = {}
    monkeypatch.setenv("TURNLOG_MAX_CONNECTIONS_PER_CLIENT", "0")
    monkeypatch.setattr(cli, "with_sign_in_link", lambda settings, start: (start, None))
    monkeypatch.setattr("turnlog.system.running_system", lambda settings, **_: captured.update(settings=settings))
    monkeypatch.setattr("api.app.create_app", lambda start, **_: start())
    monkeypatch.setattr("uvicorn.Server.run", lambda server, *_, **__: captured.update(config=server.config))
    monkeypatch.setattr(cli, "_configure_logging", lambda arguments: None)

    assert cli.main(["serve", "--max-token-ttl-s", "3600", "--max-url-kib", "4", "--keep-alive-s", "30"]) == 0

    assert captured["settings"].max_token_ttl_s == 3600
    protocol, config = captured["config"].http, captured["config"]
    assert issubclass(protocol, BoundedHttpProtocol) and config.timeout_keep_alive == 30
    assert protocol.limits.max_url_bytes == 4096 and protocol.limits.max_connections_per_client == 0
    assert protocol.limits.max_head_bytes == 64 * 1024 and protocol.limits.max_headers == 100


def test_flags_win_over_the_environment_and_repeated_flags_replace_its_list(monkeypatch) -> None:
    monkeypatch.setenv("TURNLOG_ROLE", "decider, projector")
    monkeypatch.setenv("TURNLOG_PORT", "9000")
    monkeypatch.setenv("TURNLOG_RUN_LEASE_S", "2.5")
    assert cli.build_parser().parse_args(["worker"]).role == ["decider", "projector"]
    assert cli.build_parser().parse_args(["worker", "--role", "inference", "--role", "watchdog"]).role == [
        "inference", "watchdog",
    ]
    assert cli.build_parser().parse_args(["worker"]).run_lease_s == 2.5
    # A bad variable is refused even where a flag would win: the environment is wrong either way.
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", "--role", "api"])
    monkeypatch.setenv("TURNLOG_ROLE", "all")
    assert cli.build_parser().parse_args(["serve", "--role", "api"]).role == "api"
    assert cli.build_parser().parse_args(["serve", "--port", "8001"]).port == 8001
    served = cli.build_parser().parse_args(["serve", "--role", "api"])
    assert (served.port, served.run_lease_s) == (9000, 2.5)


def test_the_embedding_batch_size_defaults_to_16_and_reaches_the_settings(monkeypatch) -> None:
    ingester = ["worker", "--role", "ingester"]
    assert cli._settings(cli.build_parser().parse_args(ingester)).embed_batch_size == 16
    monkeypatch.setenv("TURNLOG_EMBED_BATCH_SIZE", "64")
    assert cli._settings(cli.build_parser().parse_args(ingester)).embed_batch_size == 64
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*ingester, "--embed-batch-size", "0"])


def test_the_cached_conversations_default_by_the_log_and_reach_the_settings(monkeypatch) -> None:
    # A miss is an indexed read on the embedded log, a partition scan on Kafka: Kafka keeps more by default.
    decider = ["worker", "--role", "decider"]
    assert cli._settings(cli.build_parser().parse_args(decider)).conversations_to_cache == 1_000
    on_kafka = cli._settings(cli.build_parser().parse_args([*decider, "--log", "kafka://127.0.0.1:9092"]))
    assert on_kafka.conversations_to_cache == 10_000
    monkeypatch.setenv("TURNLOG_CACHED_CONVERSATIONS", "500")
    assert cli._settings(cli.build_parser().parse_args(decider)).conversations_to_cache == 500
    assert cli._settings(cli.build_parser().parse_args(["serve", "--cached-conversations", "200"])).conversations_to_cache == 200
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*decider, "--cached-conversations", "0"])


def test_an_empty_variable_counts_as_unset_and_only_the_command_run_reads_its_variables(monkeypatch) -> None:
    monkeypatch.setenv("TURNLOG_PORT", "")
    monkeypatch.setenv("TURNLOG_WORKSPACE", " , ")
    monkeypatch.setenv("TURNLOG_ROLE", "inference")  # a worker's role; `serve --role` takes all or api
    parser = cli.build_parser()
    assert parser.parse_args(["worker"]).role == ["inference"]
    assert parser.parse_args(["token", "--user", "u", "--org", "o", "--workspace", "w"]).workspace == ["w"]
    monkeypatch.delenv("TURNLOG_ROLE")
    assert parser.parse_args(["serve"]).port == 8000


def test_token_takes_its_workspaces_from_the_environment(tmp_path, monkeypatch, capsys) -> None:
    import jwt

    monkeypatch.setenv("TURNLOG_USER", "u_1")
    monkeypatch.setenv("TURNLOG_ORG", "org_1")
    monkeypatch.setenv("TURNLOG_WORKSPACE", "ws_1,ws_2")
    monkeypatch.setenv("TURNLOG_DATA_DIR", str(tmp_path))
    assert cli.main(["token"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert (claims["sub"], claims["org"], claims["workspaces"]) == ("u_1", "org_1", ["ws_1", "ws_2"])


def test_help_shows_defaults_and_variables_but_never_secrets_or_environment_values(monkeypatch, capsys) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TURNLOG_STORE", "clickhouse://turnlog:password-in-a-url@clickhouse:8123/turnlog")
    serve = help_text(capsys, "serve")
    for shown in (
        "(default: 127.0.0.1; env TURNLOG_HOST)", "(default: 8000; env TURNLOG_PORT)",
        "(default: all; env TURNLOG_ROLE)", "(default: .turnlog; env TURNLOG_DATA_DIR)",
        "(default: 30; env TURNLOG_RUN_LEASE_S)", "(default: 0; env TURNLOG_TOKEN_DELAY_MS)",
        "(default: 20; env TURNLOG_ANSWER_TOKENS)", "(default: 256; env TURNLOG_MAX_OUTPUT_TOKENS)",
        "(default: info; env TURNLOG_LOG_LEVEL)", "TURNLOG_SECRET", "TURNLOG_ENGINE_API_KEY",
    ):
        assert shown in serve
    worker = help_text(capsys, "worker")
    assert "(required; env TURNLOG_ROLE, separated by commas)" in worker
    token = help_text(capsys, "token")
    assert "(required; env TURNLOG_WORKSPACE, separated by commas)" in token and "TURNLOG_SECRET" in token
    for text in (serve, worker, token, help_text(capsys, "replay")):
        assert not any(secret in text for secret in (*SECRETS.values(), "password-in-a-url"))


def test_version_prints_the_installed_version(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"turnlog {importlib.metadata.version('turnlog')}\n"


def test_token_refuses_an_id_the_server_would_refuse_in_one_line(tmp_path, capsys) -> None:
    argv = ["token", "--user", "a b", "--org", "o", "--workspace", "w", "--data-dir", str(tmp_path)]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("turnlog token: error: user_id 'a b' must be 1-64 characters") and captured.err.count("\n") == 1
