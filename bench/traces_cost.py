"""What a span costs (docs/benchmarks.md, "Traces"), measured in one process with timeit.

    python bench/traces_cost.py                 # the micro-measure: µs per span
    python bench/traces_cost.py --sink 4399     # an OTLP/HTTP sink for an A/B with traces on:
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4399 python bench/ab.py --ref <before>

The micro-measure times what the request path pays per call with traces on (the span
started with the caller's traceparent, the upstream's headers, the attributes set, the
span ended into the batch processor's queue; the exporter dropping the batches), what it
pays with them off (the ``is None`` test), and what the batch thread pays per span to
encode a batch of 512 as protobuf (off the request path, but in the worker's process).
"""

from __future__ import annotations

import argparse
import sys
import timeit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BODY = {"model": "openai/gpt-4o-mini", "messages": []}
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "cached_tokens": None}
INCOMING = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def micro() -> None:
    """Print µs per span on the request path, ns with traces off, µs per span encoded."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tally.traces.spans import SCOPE, Exporting

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    def provider(processor) -> Exporting:
        exporting = Exporting.__new__(Exporting)  # Tally's, with another exporter
        exporting.provider = TracerProvider(shutdown_on_exit=False)
        exporting.provider.add_span_processor(processor)
        exporting.tracer = exporting.provider.get_tracer(SCOPE)
        return exporting

    def one(exporting: Exporting) -> None:
        span = exporting.start("chat", BODY, "web", "ed4adb7e2d2b330137dab318f3e01949", INCOMING)
        span.upstream_headers(None)
        span.end(
            200,
            response_model="openai/gpt-4o-mini",
            usage=USAGE,
            pseudo_id="tally_0123456789abcdef",
            response_id="gen-1",
        )

    batched = provider(BatchSpanProcessor(Drop()))
    for _ in range(2000):
        one(batched)
    n = 20000
    on = min(timeit.repeat(lambda: one(batched), number=n, repeat=5)) / n

    class Pipeline:
        tracer = None

    pipeline = Pipeline()

    def off() -> None:
        if pipeline.tracer is not None:
            raise AssertionError

    m = 1_000_000
    off_s = min(timeit.repeat(off, number=m, repeat=5)) / m
    memory = InMemorySpanExporter()
    kept = provider(SimpleSpanProcessor(memory))
    for _ in range(512):
        one(kept)
    batch = memory.get_finished_spans()
    encode = min(
        timeit.repeat(lambda: encode_spans(batch).SerializeToString(), number=20, repeat=5)
    )
    size = len(encode_spans(batch).SerializeToString()) / len(batch)
    print(f"traces on, request path, per call: {on * 1e6:.1f} µs")
    print(f"traces off, per call ('is None'): {off_s * 1e9:.0f} ns")
    print(f"batch thread, per span (a batch of 512 encoded): {encode / 20 / 512 * 1e6:.1f} µs")
    print(f"bytes per span exported: {size:.0f}")


def sink(port: int) -> None:
    """An OTLP/HTTP endpoint that reads each export and answers 200 (for bench/ab.py)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sink", type=int, metavar="PORT", help="serve an OTLP/HTTP sink")
    args = parser.parse_args()
    sink(args.sink) if args.sink else micro()
