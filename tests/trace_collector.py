"""Collecting traces in tests: the SDK recording in memory for one test, and a tiny OTLP/HTTP collector for processes.

`recorded_spans()` installs an SDK tracer provider with an in-memory exporter as the global one while the block runs
(and puts the previous one back), so in-process tests see every span as it ends. `OtlpCollector` is a real HTTP
server on 127.0.0.1 that accepts what OpenTelemetry's OTLP/HTTP exporter sends (`POST /v1/traces`, protobuf,
gzip or not) and decodes it with `opentelemetry-proto`; `env()` gives a process the `OTEL_*` variables that point it
there.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def recorded_spans() -> Iterator:
    """An `InMemorySpanExporter` holding every span that ends in the block (the SDK is this process's provider then)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # OpenTelemetry sets its global provider once per process; its own tests reset it the same way.
    saved = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


@dataclass(frozen=True, kw_only=True)
class CollectedSpan:
    """One span as the collector received it; ids in lower-case hex, `parent_id` None for a root."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: Mapping[str, object]
    events: tuple[str, ...]
    resource: Mapping[str, object]
    status_code: int


class OtlpCollector:
    """An OTLP/HTTP trace receiver on a free port of 127.0.0.1, in a thread of this process."""

    def __init__(self) -> None:
        self._bodies: list[bytes] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                with collector._lock:
                    collector._bodies.append(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-collector", daemon=True)

    def start(self) -> OtlpCollector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self, *, schedule_delay_ms: int | None = 100) -> dict[str, str]:
        """The variables that make a turnlog process export its spans here (batches sent every `schedule_delay_ms`;
        None: the SDK's default, 5 s)."""
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
        if schedule_delay_ms is not None:
            env["OTEL_BSP_SCHEDULE_DELAY"] = str(schedule_delay_ms)
        return env

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self._bodies)

    def spans(self) -> list[CollectedSpan]:
        """Every span received so far, decoded."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        with self._lock:
            bodies = list(self._bodies)
        spans = []
        for body in bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        spans.append(CollectedSpan(
                            trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex() or None, name=span.name, kind=span.kind,
                            start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                            attributes=_attributes(span.attributes), events=tuple(event.name for event in span.events),
                            resource=resource, status_code=span.status.code,
                        ))
        return spans


def _attributes(key_values) -> dict[str, object]:
    return {item.key: _value(item.value) for item in key_values}


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(value) for value in any_value.array_value.values)
    return getattr(any_value, kind) if kind is not None else None
