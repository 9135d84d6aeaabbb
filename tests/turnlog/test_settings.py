"""Settings and the CLI's options: adapters by URL, roles by name, the environment as defaults."""

from pathlib import Path

import pytest

from turnlog.cli import main
from turnlog.settings import PROCESSOR_ROLES, Settings, url_path, url_scheme
from turnlog.adapters import build_log, build_store


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


def test_a_worker_opens_the_store_to_write_read_models_or_to_read_its_snapshots_from_a_server(tmp_path) -> None:
    server, kafka = "clickhouse://u:p@ch:8123/turnlog", "kafka://broker:9092"
    assert Settings(roles=("projector",)).worker_opens_store
    assert Settings(roles=("decider",), log_url=kafka, store_url=server).worker_opens_store
    assert not Settings(roles=("decider",), log_url=kafka).worker_opens_store  # chDB: the serving process's
    assert not Settings(roles=("decider",), store_url=server).worker_opens_store  # the embedded log: no snapshots
    tiers = tmp_path / "tiers.toml"
    assert Settings(roles=("governance",), store_url=server, tiers_file=tiers).worker_opens_store
    assert not Settings(roles=("governance",), store_url=server).worker_opens_store  # without tiers it does nothing
    assert Settings(roles=("prompt-builder",), log_url=kafka, store_url=server).worker_opens_store
    assert not Settings(roles=("inference", "ingester"), log_url=kafka, store_url=server).worker_opens_store


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


def test_uploads_and_the_search_index_live_under_the_data_dir_by_default(tmp_path) -> None:
    from events.blobs import DirectoryBlobStore
    from turnlog.adapters import build_blob_store
    from projections.search.embedded import EmbeddedSearchIndex
    from turnlog.adapters import build_search_index

    settings = Settings(data_dir=tmp_path)
    assert settings.blobs == f"file://{(tmp_path / 'blobs').resolve()}"
    assert isinstance(build_blob_store(settings.blobs), DirectoryBlobStore)
    assert url_scheme(settings.search) == "embedded" and url_path(settings.search) == (tmp_path / "search").resolve()
    assert isinstance(build_search_index(settings), EmbeddedSearchIndex)
    assert settings.max_upload_bytes == 25 * 1024 * 1024
    assert "ingester" in settings.roles and settings.searches
    assert not Settings(roles=("decider", "projector")).searches


def test_elasticsearch_urls_name_the_cluster_and_its_options() -> None:
    from projections.search.elasticsearch import ElasticsearchIndex
    from turnlog.adapters import build_search_index

    index = build_search_index(Settings(search_url="elasticsearch://search:9200?replicas=0&fusion=client&shards=3"))
    assert isinstance(index, ElasticsearchIndex)
    assert (index._hosts, index._replicas, index._shards, index._fusion) == ("http://search:9200", 0, 3, "client")
    assert build_search_index(Settings(search_url="https://es.example:9243/"))._hosts == "https://es.example:9243"
    with pytest.raises(ValueError, match="unsupported search URL"):
        build_search_index(Settings(search_url="lucene:///tmp/x"))
    with pytest.raises(ValueError, match="unknown search URL option"):
        build_search_index(Settings(search_url="elasticsearch://search:9200?replica=0"))
    with pytest.raises(ValueError, match="positive number of MiB"):
        Settings(max_upload_mb=0)


def test_document_options_come_from_the_environment_and_flags_win(tmp_path, monkeypatch) -> None:
    from turnlog import cli

    captured = {}

    async def run_workers(settings: Settings) -> None:
        captured["settings"] = settings

    monkeypatch.setattr("turnlog.system.run_workers", run_workers)
    monkeypatch.setattr(cli, "_configure_logging", lambda level: None)
    monkeypatch.setenv("TURNLOG_BLOBS", "s3://bucket/uploads?endpoint=http://minio:9000")
    monkeypatch.setenv("TURNLOG_SEARCH", "elasticsearch://search:9200")
    monkeypatch.setenv("TURNLOG_MAX_UPLOAD_MB", "5")
    assert main(["worker", "--role", "ingester", "--data-dir", str(tmp_path)]) == 0
    settings = captured["settings"]
    assert (settings.blobs, settings.search, settings.max_upload_bytes) == (
        "s3://bucket/uploads?endpoint=http://minio:9000", "elasticsearch://search:9200", 5 * 1024 * 1024,
    )
    assert settings.roles == ("ingester",)
    assert main(["worker", "--role", "ingester", "--data-dir", str(tmp_path), "--search", "embedded:///srv/index", "--max-upload-mb", "0.5"]) == 0
    assert (captured["settings"].search, captured["settings"].max_upload_bytes) == ("embedded:///srv/index", 512 * 1024)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"roles": ("juggler",)}, "--role: unknown role(s) ['juggler']; roles are decider"),
        ({"processor_runtime": "celery"}, "--processor-runtime: unknown runtime 'celery'; choose auto, faust, native"),
        ({"engine_concurrency": 0}, "--engine-concurrency must be >= 1, got 0"),
        ({"max_upload_mb": -1}, "--max-upload-mb must be a positive number of MiB, got -1"),
        ({"processor_runtime": "faust"}, "--processor-runtime faust needs a Kafka log (--log kafka://host:9092)"),
        ({"rerank_model": Path("/nonexistent/reranker")}, "--rerank-model: /nonexistent/reranker is not a model directory"),
    ],
)
def test_refused_settings_name_the_option_that_sets_them(options, message) -> None:
    with pytest.raises(ValueError) as refused:
        Settings(**options)
    assert str(refused.value).startswith(message)


def test_only_roles_that_search_for_questions_answer_queries(tmp_path) -> None:
    tools = tmp_path / "tools.toml"
    assert Settings().answers_queries  # every role
    assert Settings(roles=("prompt-builder",)).answers_queries
    assert Settings(roles=("tools",), tools_file=tools).answers_queries  # file_search for the model
    assert not Settings(roles=("tools",)).answers_queries  # no tools file: no tools at all
    assert not Settings(roles=("ingester",)).answers_queries  # writes the index, never searches it
    assert not Settings(roles=("decider", "projector", "inference")).answers_queries
