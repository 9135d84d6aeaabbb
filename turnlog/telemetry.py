"""Tracing for a process: an OpenTelemetry SDK tracer provider, installed when the standard `OTEL_*` variables ask.

Off unless asked: with none of the variables below, no SDK is imported or installed, OpenTelemetry's API stays the
no-op it is, and `kernel/tracing.py` makes no spans (envelopes still carry the trace id). On when
`OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`; `none` is off), or when it is unset and
`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; `OTEL_SDK_DISABLED=true` wins over both.
OTLP goes over HTTP with protobuf bodies (`http/protobuf`, the exporter's own reading of the endpoint, headers,
timeout and compression variables); batching follows `OTEL_BSP_*` and sampling `OTEL_TRACES_SAMPLER` (the SDK's
default: parent-based, always on). The resource names the process: `service.name` (`OTEL_SERVICE_NAME` wins),
`service.instance.id` (host and pid), `process.pid`, `turnlog.roles`; `OTEL_RESOURCE_ATTRIBUTES` adds and overrides.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

logger = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console")
PROTOCOLS = ("http/protobuf",)


def trace_exporters(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters the environment asks for (none: tracing is off); a ValueError names what is not supported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    named = tuple(name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip())
    if not named:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        named = ("otlp",) if endpoint else ()
    exporters = tuple(name for name in named if name != "none")
    unknown = [name for name in exporters if name not in EXPORTERS]
    if unknown:
        raise ValueError(f"OTEL_TRACES_EXPORTER names {', '.join(unknown)}; turnlog exports traces by {', '.join(EXPORTERS)}")
    if "otlp" in exporters:
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or PROTOCOLS[0]
        if protocol not in PROTOCOLS:
            raise ValueError(f"OTLP protocol {protocol!r} is not supported: turnlog exports traces by {', '.join(PROTOCOLS)}")
    return exporters


def default_service_name(roles: Sequence[str], *, serves_api: bool) -> str:
    """`turnlog` for a server with roles, `turnlog-api` for an API-only one, `turnlog-<role>+<role>` for a worker."""
    if serves_api:
        return "turnlog" if roles else "turnlog-api"
    return "turnlog-" + "+".join(roles) if roles else "turnlog-worker"


@contextmanager
def traced_process(
    *, service_name: str, roles: Sequence[str], environ: Mapping[str, str] = os.environ
) -> Iterator[None]:
    """Record and export this process's spans while the block runs (when the environment asks), flushing them at its
    end. Nothing happens when tracing is off, or when a provider is installed already (an embedding program's)."""
    from opentelemetry import trace

    from kernel import tracing

    exporters = trace_exporters(environ)
    if not exporters or tracing.enabled():
        yield
        return
    provider = _provider(exporters, service_name=service_name, roles=roles)
    trace.set_tracer_provider(provider)
    logger.info("tracing on: spans exported by %s as service %s", ", ".join(exporters), service_name)
    try:
        yield
    finally:
        provider.shutdown()  # exports what is still batched


def _provider(exporters: Sequence[str], *, service_name: str, roles: Sequence[str]):
    # The SDK is imported only when tracing is on (the `otel` extra).
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    defaults = {
        "service.name": service_name,
        "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
        "process.pid": os.getpid(),
        "host.name": socket.gethostname(),
        "turnlog.roles": tuple(roles),
    }
    # The environment's attributes (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME) win over turnlog's defaults.
    resource = Resource.create(defaults).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    for name in exporters:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider
