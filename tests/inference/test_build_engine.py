"""Choosing the sglang and openai-compatible engines: CLI flags and TURNLOG_* variables, build_engine,
and a real `turnlog serve --engine openai-compatible` answering (and cancelling) through the test server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import e2e_server
import pytest
from openai_server import prompt_tokens_of

from inference.engine import ChatMessage, GenerationFinished, GenerationRequest
from inference.openai_compatible import OpenAICompatibleEngine
from inference.sglang import SglangEngine
from turnlog import cli
from turnlog.settings import Settings
from turnlog.adapters import build_engine
from turnlog.adapters import load_pools


def worker_settings(monkeypatch, *arguments: str, environment: dict[str, str] | None = None) -> Settings:
    """The Settings `turnlog worker --role inference ...` builds from its flags and TURNLOG_* variables."""
    for name, value in (environment or {}).items():
        monkeypatch.setenv(name, value)
    return cli._settings(cli.build_parser().parse_args(["worker", "--role", "inference", *arguments]))


def test_a_worker_whose_engine_is_not_installed_stops_at_start_naming_it(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["worker", "--role", "inference", "--engine", "sglang", "--engine-model", "Qwen/Qwen2.5-0.5B-Instruct"])
    assert stopped.value.code == 2
    assert "the in-process SGLang engine (--engine sglang): the `sglang` extra is not installed" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def no_turnlog_environment(monkeypatch) -> None:
    for name in (
        "TURNLOG_ENGINE", "TURNLOG_ENGINE_URL", "TURNLOG_ENGINE_MODEL", "TURNLOG_ENGINE_API_KEY", "TURNLOG_POOLS",
        "TURNLOG_INFERENCE_POOLS", "TURNLOG_ENGINE_CONCURRENCY",
    ):
        monkeypatch.delenv(name, raising=False)


def test_the_engine_flags_reach_the_settings(monkeypatch) -> None:
    settings = worker_settings(
        monkeypatch, "--engine", "openai-compatible", "--engine-url", "http://sglang:30000", "--engine-model", "qwen"
    )
    assert (settings.engine, settings.engine_url, settings.engine_model) == ("openai-compatible", "http://sglang:30000", "qwen")
    assert settings.engine_api_key is None


def test_the_engine_settings_default_to_turnlog_variables_and_flags_win(monkeypatch) -> None:
    environment = {
        "TURNLOG_ENGINE": "sglang",
        "TURNLOG_ENGINE_URL": "http://from-env:30000/v1",
        "TURNLOG_ENGINE_MODEL": "Qwen/Qwen2.5-0.5B-Instruct",
        "TURNLOG_ENGINE_API_KEY": "sk-from-env",
    }
    from_environment = worker_settings(monkeypatch, environment=environment)
    flags_win = worker_settings(monkeypatch, "--engine-model", "Qwen/Qwen2.5-7B-Instruct", environment=environment)

    assert (from_environment.engine, from_environment.engine_model) == ("sglang", "Qwen/Qwen2.5-0.5B-Instruct")
    assert (from_environment.engine_url, from_environment.engine_api_key) == ("http://from-env:30000/v1", "sk-from-env")
    assert flags_win.engine_model == "Qwen/Qwen2.5-7B-Instruct"


def test_build_engine_makes_the_sglang_adapter_without_importing_sglang() -> None:
    engine = build_engine(Settings(engine="sglang", engine_model="Qwen/Qwen2.5-0.5B-Instruct"))
    assert isinstance(engine, SglangEngine) and engine.name == "sglang"
    with pytest.raises(ValueError, match="needs --engine-model"):
        build_engine(Settings(engine="sglang"))


def test_build_engine_needs_a_url_and_a_model_for_an_openai_compatible_server() -> None:
    with pytest.raises(ValueError, match="needs --engine-url and --engine-model"):
        build_engine(Settings(engine="openai-compatible", engine_model="qwen"))
    with pytest.raises(ValueError, match="needs --engine-url and --engine-model"):
        build_engine(Settings(engine="openai-compatible", engine_url="http://sglang:30000"))
    with pytest.raises(ValueError, match="choose cpu, scripted, sglang or openai-compatible"):
        build_engine(Settings(engine="carrier-pigeon"))


TWO_POOLS = """
[[pools]]
name = "small"
engine = "openai-compatible"
engine_url = "http://sglang-small:30000/v1"
engine_model = "qwen-small"
engine_api_key_env = "SMALL_KEY"
context_tokens = 32768
capacity = 8

[[pools]]
name = "large"
engine = "openai-compatible"
engine_url = "http://sglang-large:30000/v1"
engine_model = "qwen-large"
context_tokens = 131072
capacity = 8
"""


def test_the_pools_flags_and_variables_reach_the_settings(monkeypatch, tmp_path) -> None:
    flags = worker_settings(monkeypatch, "--pools", str(tmp_path / "pools.toml"), "--inference-pools", "small, large")
    environment = worker_settings(monkeypatch, environment={"TURNLOG_POOLS": "/etc/turnlog/pools.toml", "TURNLOG_INFERENCE_POOLS": "large"})

    assert (flags.pools_file, flags.inference_pools) == (tmp_path / "pools.toml", ("small", "large"))
    assert (str(environment.pools_file), environment.inference_pools) == ("/etc/turnlog/pools.toml", ("large",))


def test_without_a_pools_file_there_is_one_interactive_pool_on_the_engine_given() -> None:
    [pool] = load_pools(Settings(engine="scripted", context_tokens=4096)).pools
    assert (pool.name, pool.engine, pool.context_tokens, pool.split_by_size) == ("interactive", "scripted", 4096, False)
    assert pool.topics() == ("inference-requests.interactive",)


def test_a_pools_file_that_is_missing_or_names_unknown_pools_is_refused_before_anything_starts(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot read the pools file .*missing.toml"):
        load_pools(Settings(pools_file=tmp_path / "missing.toml"))
    (tmp_path / "pools.toml").write_text(TWO_POOLS)
    with pytest.raises(ValueError, match=r"--inference-pools names no pool \['medium'\]; pools are small, large"):
        load_pools(Settings(pools_file=tmp_path / "pools.toml", inference_pools=("medium",)))


def test_a_pool_s_engine_gets_the_key_its_pool_names_and_no_other(monkeypatch, tmp_path) -> None:
    (tmp_path / "pools.toml").write_text(TWO_POOLS)
    monkeypatch.setenv("SMALL_KEY", "sk-small")
    settings = Settings(pools_file=tmp_path / "pools.toml", engine_api_key="sk-default")
    small, large = load_pools(settings).pools
    small_engine, large_engine = build_engine(settings, small), build_engine(settings, large)

    assert (small_engine.base_url, small_engine.model) == ("http://sglang-small:30000/v1", "qwen-small")
    assert small_engine._api_key == "sk-small" and large_engine._api_key is None
    assert small_engine.max_concurrency == small.capacity  # a connection for every run the pool admits


def test_engine_concurrency_comes_from_its_flag_without_a_pools_file(monkeypatch) -> None:
    settings = worker_settings(
        monkeypatch, "--engine", "openai-compatible", "--engine-url", "http://sglang:30000", "--engine-model", "qwen",
        "--engine-concurrency", "64",
    )
    assert build_engine(settings).max_concurrency == 64
    assert build_engine(Settings(engine="sglang", engine_model="m")).max_concurrency == 64  # the engine's default
    with pytest.raises(ValueError, match="--engine-concurrency must be >= 1"):
        Settings(engine_concurrency=0)


async def test_build_engine_makes_an_openai_compatible_engine_that_talks_to_the_server(chat_server) -> None:
    chat_server.behaviour.api_key = "sk-built"
    engine = build_engine(
        Settings(engine="openai-compatible", engine_url=chat_server.base_url, engine_model=chat_server.model,
                 engine_api_key="sk-built")
    )
    assert isinstance(engine, OpenAICompatibleEngine) and engine.base_url == f"{chat_server.base_url}/v1"
    await engine.start()
    try:
        events = [
            event
            async for event in engine.generate(
                GenerationRequest(
                    request_id="run-built", messages=(ChatMessage(role="user", content="Say hi."),), max_output_tokens=4
                )
            )
        ]
    finally:
        await engine.close()

    assert isinstance(events[-1], GenerationFinished) and events[-1].output_tokens == 4


@pytest.fixture
def server_on_the_openai_engine(chat_server, tmp_path) -> Iterator[e2e_server.TurnlogServer]:
    server = e2e_server.TurnlogServer(
        data_dir=tmp_path / "data",
        engine="openai-compatible",
        extra_args=("--engine-url", chat_server.base_url, "--engine-model", chat_server.model, "--max-output-tokens", "300"),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_turn_streams_from_the_server_and_a_cancel_disconnects_it(server_on_the_openai_engine, chat_server) -> None:
    chat_server.behaviour.answer_tokens = 6
    user = server_on_the_openai_engine.new_user()
    async with user.client() as client:
        conversation_id = await e2e_server.create_conversation(client, user.workspace)
        accepted = await e2e_server.submit_turn(client, conversation_id, "tell me about bread")
        events = await e2e_server.read_stream(client, accepted["runId"])

        chat_server.behaviour.answer_tokens, chat_server.behaviour.token_delay_s = 300, 0.02
        second = await e2e_server.submit_turn(client, conversation_id, "now tell me everything")
        async with e2e_server.open_stream(client, second["runId"]) as stream:
            async for event in stream:
                if event.event == "assistant.delta":
                    break
            cancel = await client.post(f"/v1/runs/{second['runId']}/cancel")
            assert cancel.status_code == 202, cancel.text
        cancelled = await e2e_server.wait_for_run(client, second["runId"])

    answered = chat_server.wait_for(accepted["runId"])
    assert events[-1].event == "assistant.completed"
    assert e2e_server.looks_like_scripted_answer_prefix(e2e_server.delta_text(events), "tell me about bread")
    usage = events[-1].json()["usage"]
    assert (usage["promptTokens"], usage["outputTokens"]) == (len(prompt_tokens_of(answered.body["messages"])), 7)
    assert answered.outcome == "completed" and answered.headers["x-request-id"] == accepted["runId"]

    stopped = await asyncio.to_thread(chat_server.wait_for, second["runId"])
    assert cancelled["status"] == "cancelled"
    assert stopped.outcome == "client disconnected" and stopped.tokens_sent < 300
