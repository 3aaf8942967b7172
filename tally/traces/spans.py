"""The OpenTelemetry SDK as Tally uses it: one provider per process exporting over
OTLP/HTTP protobuf from a batch thread (:class:`Exporting`), and one span per API call
(:class:`CallSpan`) with the GenAI semantic conventions' attributes.

Imported on a process's first span (tally.traces.tracer), never on a request path with
traces off. Everything the standard variables configure stays the SDK's: the endpoint and
headers (``OTEL_EXPORTER_OTLP_*``), the resource (``OTEL_SERVICE_NAME``, default
``tally``; ``OTEL_RESOURCE_ATTRIBUTES``), the sampler (``OTEL_TRACES_SAMPLER``), the
batching (``OTEL_BSP_*``), the attribute limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SERVICE = "tally"  # service.name unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say
SCOPE = "tally.proxy"  # the instrumentation scope of the spans
MAX_TEXT = 255  # a model name's longest (the request log's column): names and attributes
# W3C trace context only: the caller's baggage is neither read nor sent to the upstream
PROPAGATOR = TraceContextTextMapPropagator()


class Exporting:
    """This process's TracerProvider, its batch processor and OTLP/HTTP exporter."""

    def __init__(self) -> None:
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: SERVICE}))
        # the sampler and span limits from OTEL_TRACES_SAMPLER, OTEL_SPAN_*; no atexit
        # hook: the runtime closes it (gunicorn's worker_exit), and a process that ends
        # otherwise loses at most one batch's wait (OTEL_BSP_SCHEDULE_DELAY)
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer(SCOPE)

    def start(
        self,
        operation: str,
        body: Any,
        key: str,
        request_id: str,
        incoming: Mapping[str, str] | None,
    ) -> CallSpan:
        """One call's span (tally.traces.tracer.Tracer.start)."""
        model = body.get("model") if isinstance(body, dict) else None
        model = _text(model) if isinstance(model, str) and model else None
        attributes = {
            "gen_ai.operation.name": operation,
            "tally.request_id": _text(request_id),
            "tally.key": _text(key),
        }
        if model is not None:
            attributes["gen_ai.request.model"] = model
        parent = PROPAGATOR.extract(incoming) if incoming is not None else None
        span = self.tracer.start_span(
            f"{operation} {model}" if model is not None else operation,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        return CallSpan(span, operation)

    def close(self, timeout: float) -> None:
        """Export what is held (for at most ``timeout`` seconds), then shut down."""
        self.provider.force_flush(int(timeout * 1000))
        self.provider.shutdown()


class CallSpan:
    """One call's span, open from the call's start until its answer ends."""

    __slots__ = ("span", "operation", "traceparent", "tracestate")

    def __init__(self, span: Span, operation: str):
        self.span = span
        self.operation = operation
        context = span.get_span_context()
        # what the upstream gets: this span as the parent (sampled or not, the trace
        # goes on); formatted here rather than through a propagator and a Context
        self.traceparent = (
            f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        )
        self.tracestate = context.trace_state.to_header() if context.trace_state else None

    def upstream_headers(self, passed_on: Mapping[str, str] | None) -> dict[str, str]:
        """The headers the upstream call carries besides Tally's own: the client's that are
        passed on (tally.proxy.upstream.PASSED_ON) and this span's trace context."""
        headers = {**passed_on} if passed_on else {}
        headers["traceparent"] = self.traceparent
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers

    def end(
        self,
        status: int,
        error_type: str | None = None,
        *,
        response_model: str | None = None,
        usage: Mapping[str, Any] | None = None,
        pseudo_id: str | None = None,
        response_id: str | None = None,
    ) -> None:
        """End the span with how the call ended: the status Tally answered (or 499 for a
        client that went away), ``error_type`` (the error's code) on failures, the model
        and usage the upstream reported, the upstream identifier sent (the pseudonymous
        end user, ``enduser.pseudo.id``) and the upstream's response id."""
        span = self.span
        if span.is_recording():
            attributes: dict[str, Any] = {"http.response.status_code": status}
            if pseudo_id:
                attributes["enduser.pseudo.id"] = _text(pseudo_id)
            if response_model:
                attributes["gen_ai.response.model"] = _text(response_model)
            if response_id:
                attributes["gen_ai.response.id"] = _text(response_id)
            if usage:
                _add_usage(attributes, usage, self.operation)
            if error_type is not None or status >= 400:
                attributes["error.type"] = _text(error_type or str(status))
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(attributes)
        span.end()


def _add_usage(attributes: dict[str, Any], usage: Mapping[str, Any], operation: str) -> None:
    """gen_ai.usage.* from a usage record (tally.proxy.endpoints.base.usage_of): the
    counts that are known; an embedding's output is no tokens."""
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    if completion is None and prompt is not None and operation == "embeddings":
        completion = 0
    if prompt is not None:
        attributes["gen_ai.usage.input_tokens"] = prompt
    if completion is not None:
        attributes["gen_ai.usage.output_tokens"] = completion
    cached = _count(usage.get("cached_tokens"))
    if cached is not None:
        attributes["gen_ai.usage.cache_read.input_tokens"] = cached


def _count(value: Any) -> int | None:
    """A token count, when ``value`` is one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _text(value: str) -> str:
    """``value`` as an attribute can carry it: at most MAX_TEXT characters, valid UTF-8
    (a lone surrogate from a client's or upstream's JSON would fail the whole batch's
    encoding)."""
    value = value[:MAX_TEXT]
    return value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")
