"""Settings and the CLI's options: adapters by URL, roles by name, the environment as defaults."""

import pytest

from turnlog.cli import main
from turnlog.settings import PROCESSOR_ROLES, Settings, url_path, url_scheme
from turnlog.system import build_log, build_store


def test_embedded_defaults_live_under_the_data_dir(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert url_scheme(settings.log) == "sqlite" and url_path(settings.log) == (tmp_path / "log.db").resolve()
    assert url_scheme(settings.store) == "chdb" and url_path(settings.store) == (tmp_path / "read-models").resolve()
    assert settings.roles == PROCESSOR_ROLES


def test_unknown_roles_and_schemes_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="roles are decider"):
        Settings(roles=("decider", "juggler"))
    with pytest.raises(ValueError, match="unsupported log URL"):
        build_log(Settings(log_url="carrier-pigeon://coop"))
    with pytest.raises(ValueError, match="unsupported read-model store URL"):
        build_store(Settings(store_url="abacus://desk"))


def test_processors_run_on_faust_on_kafka_and_natively_on_the_embedded_log(tmp_path) -> None:
    assert not Settings(data_dir=tmp_path).runs_on_faust
    assert Settings(log_url="kafka://broker:9092").runs_on_faust
    assert not Settings(log_url="kafka://broker:9092", processor_runtime="native").runs_on_faust
    with pytest.raises(ValueError, match="needs a Kafka log"):
        Settings(data_dir=tmp_path, processor_runtime="faust")
    with pytest.raises(ValueError, match="choose auto, faust, native"):
        Settings(processor_runtime="celery")


def test_token_reads_its_data_dir_from_the_environment(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TURNLOG_DATA_DIR", str(tmp_path))
    assert main(["token", "--user", "u_1", "--org", "org_1", "--workspace", "ws_1"]) == 0
    assert capsys.readouterr().out.count(".") == 2  # a JWT
    assert (tmp_path / "secret.key").exists()
