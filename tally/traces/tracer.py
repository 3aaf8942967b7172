"""The tracer the pipeline holds when traces are on: light to build (the runtime builds it
in every process, the CLI's too), the SDK set up on the first span of a process."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the SDK is imported when the first span starts, never before
    from tally.traces.spans import CallSpan, Exporting

FLUSH_SECONDS = 10.0  # what a stopping worker gives the exporter for the spans it holds


class Tracer:
    """Starts one span per API call (:meth:`start`); :meth:`close` exports what is left.

    The OpenTelemetry SDK (a TracerProvider with a BatchSpanProcessor and the OTLP/HTTP
    exporter, configured by the standard OTEL_* variables) is built on the first span in
    the process that serves it: a gunicorn worker builds its own after the fork and after
    gevent's patching, so the batch processor's thread is one of the worker's, and a
    master or a CLI command that serves no call builds nothing."""

    def __init__(self, variables: Mapping[str, str] | None = None) -> None:
        """``variables``: the OTEL_* variables the SDK is built with (tally.settings:
        the environment's, with the app's overrides); None: the environment's."""
        self._lock = threading.Lock()
        self._sdk: Exporting | None = None
        self._variables = variables

    def start(
        self,
        operation: str,
        body: Any,
        key: str,
        request_id: str,
        incoming: Mapping[str, str] | None,
    ) -> CallSpan:
        """The span of one call, started now: ``operation`` (``chat``, ``embeddings``),
        the model asked for in ``body`` (if it names one), the key's name and the request
        id; a child of the caller's trace when ``incoming`` (the request's headers) holds
        a valid W3C ``traceparent``."""
        sdk = self._sdk or self._build()
        return sdk.start(operation, body, key, request_id, incoming)

    def close(self, timeout: float = FLUSH_SECONDS) -> None:
        """Export the spans still held, then stop the exporter (a worker that exits)."""
        with self._lock:
            sdk, self._sdk = self._sdk, None
        if sdk is not None:
            sdk.close(timeout)

    def _build(self) -> Exporting:
        with self._lock:
            if self._sdk is None:
                from tally.traces.spans import Exporting

                with _environment(self._variables):
                    self._sdk = Exporting()
            return self._sdk


@contextmanager
def _environment(variables: Mapping[str, str] | None) -> Iterator[None]:
    """The process's OTEL_* variables as ``variables`` say while the SDK is built (its
    exporter, batch processor, sampler and resource read them then, and only then), as
    they were afterwards. Under gunicorn they are the environment's: nothing changes."""
    if variables is None:
        yield
        return
    before = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
    if before == dict(variables):
        yield
        return
    for name in before:
        del os.environ[name]
    os.environ.update(variables)
    try:
        yield
    finally:
        for name in variables:
            os.environ.pop(name, None)
        os.environ.update(before)
