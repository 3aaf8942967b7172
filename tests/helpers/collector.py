"""A loopback OTLP/HTTP collector: ``POST /v1/traces`` with a protobuf
ExportTraceServiceRequest, decoded with opentelemetry-proto (the exporter's own
dependency), every span kept with its resource, and every request's bytes as sent."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from werkzeug.wrappers import Request, Response

from tests.helpers.loopback import LoopbackServer
from tests.helpers.waiting import wait_for


@dataclass
class Exported:
    """One span as the collector received it."""

    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # empty for a root span
    kind: int  # the proto's enum: 2 SERVER, 3 CLIENT
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    start_ns: int
    end_ns: int
    resource: dict[str, Any]
    scope: str

    @property
    def seconds(self) -> float:
        """How long the span was open."""
        return (self.end_ns - self.start_ns) / 1e9


class Collector:
    """Receives spans at :attr:`url` (what ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set to);
    ``status`` is what it answers (a test can make it fail)."""

    def __init__(self) -> None:
        self.spans: list[Exported] = []
        self.bodies: list[bytes] = []  # each export's bytes, as they arrived
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self._lock = threading.Lock()
        self.server = LoopbackServer(self.wsgi)
        self.url = self.server.url

    def close(self) -> None:
        self.server.close()

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[Exported]:
        """The spans received, once there are at least ``count``."""
        return wait_for(lambda: list(self.spans) if len(self.spans) >= count else None, timeout)

    def wsgi(self, environ, start_response):
        request = Request(environ)
        if request.method != "POST" or request.path != "/v1/traces":
            return Response(status=404)(environ, start_response)
        raw = request.get_data()
        assert request.headers.get("Content-Type") == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(raw)
        with self._lock:
            self.bodies.append(raw)
            self.headers.append(dict(request.headers))
            if self.status == 200:
                self.spans.extend(_spans_of(export))
        answer = ExportTraceServiceResponse().SerializeToString()
        return Response(answer, self.status, mimetype="application/x-protobuf")(
            environ, start_response
        )


def _spans_of(export: ExportTraceServiceRequest) -> list[Exported]:
    found = []
    for resource_spans in export.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    Exported(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        attributes=_attributes(span.attributes),
                        status_code=span.status.code,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                )
    return found


def _attributes(pairs) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        out[pair.key] = getattr(pair.value, kind) if kind else None
    return out
