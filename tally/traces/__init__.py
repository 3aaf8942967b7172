"""Traces (PRODUCT.md, "Traces (OpenTelemetry)"): every API call one OpenTelemetry span
with the GenAI attributes, exported over OTLP/HTTP protobuf in the background.

:class:`~tally.traces.tracer.Tracer` is what the runtime hands the pipeline when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``…_TRACES_ENDPOINT``) is set, and None otherwise: the
request path then pays one ``is None`` test and never imports the SDK. The SDK itself
(:mod:`tally.traces.spans`) is set up on a process's first span, so under gunicorn each
worker builds its own provider and batch thread after the fork.
"""
