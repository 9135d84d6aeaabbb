"""Tracing is on only when the standard `OTEL_*` variables ask, and then names the process it traces."""

import pytest

from turnlog.extras import required_extras
from turnlog.settings import Settings
from turnlog.telemetry import _provider, default_service_name, trace_exporters


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "x"}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, ()),
    ],
)
def test_traces_are_exported_only_when_the_environment_asks(environ, exporters) -> None:
    assert trace_exporters(environ) == exporters


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "zipkin"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
    ],
)
def test_an_exporter_turnlog_does_not_have_is_refused_by_name(environ, named) -> None:
    with pytest.raises(ValueError, match=named):
        trace_exporters(environ)


def test_each_process_is_named_after_what_it_runs() -> None:
    assert default_service_name(("decider", "projector"), serves_api=True) == "turnlog"
    assert default_service_name((), serves_api=True) == "turnlog-api"
    assert default_service_name(("decider", "projector"), serves_api=False) == "turnlog-decider+projector"


def test_the_resource_names_the_process_and_the_environment_wins(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging")
    provider = _provider(("console",), service_name="turnlog-inference", roles=("inference",))
    attributes = provider.resource.attributes
    assert attributes["service.name"] == "turnlog-inference"
    assert attributes["turnlog.roles"] == ("inference",)
    assert attributes["process.pid"] > 0 and ":" in attributes["service.instance.id"]
    assert attributes["deployment.environment.name"] == "staging"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "chat-inference")
    assert _provider(("console",), service_name="turnlog-inference", roles=()).resource.attributes["service.name"] == "chat-inference"


def test_exporting_traces_needs_the_otel_extra(monkeypatch, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, roles=("watchdog",))
    assert "otel" not in {requirement.extra for requirement in required_extras(settings, api=False)}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert "otel" in {requirement.extra for requirement in required_extras(settings, api=False)}
