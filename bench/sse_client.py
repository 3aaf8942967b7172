"""A small asyncio HTTP/1.1 client for streamed chat completions and Responses streams
(benchmarks only).

It writes the request by hand and reads the chunked SSE answer as it arrives, noting
when each event lands. A chat stream ends with ``[DONE]``, a Responses stream with its
``response.completed`` event. The mock upstream stamps every event with ``sent_ns``, so the
gap between the upstream writing an event and the client reading it is measured on one
clock, whatever sits between them.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field

_SENT = re.compile(rb'"sent_ns":(\d+)')


@dataclass
class StreamResult:
    """What one streamed request saw."""

    status: int = 0
    ttfb_ms: float | None = None  # request written -> first content event read
    lags_ms: list[float] = field(default_factory=list)  # upstream write -> client read
    events: int = 0
    done: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 200 that reached its end ([DONE], or response.completed)."""
        return self.status == 200 and self.done and self.error is None


def request_bytes(host: str, port: int, path: str, body: dict, key: str | None) -> bytes:
    """The raw HTTP request for a POST of ``body`` as JSON."""
    payload = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(payload)}",
    ]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class _StreamProtocol(asyncio.Protocol):
    """Reads one streamed answer. The chunked framing is not undone: events are found by
    their ``data:`` prefix in the raw bytes, which is all the measurement needs, and far
    cheaper than a stream reader (the load generator shares the CPU it measures)."""

    def __init__(self, request: bytes, result: StreamResult, finished: asyncio.Future):
        self.request, self.result, self.finished = request, result, finished
        self.buffer = b""
        self.head = None
        self.started = 0.0
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.started = time.perf_counter()
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now_ns = time.time_ns()
        self.buffer += data
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            self.result.status = int(self.head.split(b" ", 2)[1])
            if self.result.status != 200:
                self._finish("status")
                return
        cut = self.buffer.rfind(b"\n\n")
        if cut < 0:
            return
        complete, self.buffer = self.buffer[: cut + 2], self.buffer[cut + 2 :]
        for event in complete.split(b"\n\n"):
            start = event.find(b"data:")
            if start >= 0:
                _note(self.result, event[start:], now_ns, self.started)
        if self.result.done:
            self._finish(None)

    def connection_lost(self, exc) -> None:
        self._finish(None if self.result.done else "connection closed")

    def _finish(self, error: str | None) -> None:
        if error and self.result.error is None:
            self.result.error = error
        if self.transport is not None:
            self.transport.close()
        if not self.finished.done():
            self.finished.set_result(None)


async def stream_once(
    host: str, port: int, path: str, body: dict, key: str | None, timeout: float = 60.0
) -> StreamResult:
    """Send one streamed request and read it to the end."""
    result = StreamResult()
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    request = request_bytes(host, port, path, body, key)
    try:
        await asyncio.wait_for(
            loop.create_connection(lambda: _StreamProtocol(request, result, finished), host, port),
            timeout,
        )
        await asyncio.wait_for(finished, timeout)
    except Exception as exc:  # a benchmark counts failures, it does not stop on them
        result.error = result.error or type(exc).__name__
    return result


def _note(result: StreamResult, event: bytes, now_ns: int, started: float) -> None:
    if not event.startswith(b"data:"):
        return
    if event.strip() == b"data: [DONE]":
        result.done = True
        return
    if b'"error"' in event:
        result.error = "error event"
    result.events += 1
    # content: a chat delta's; "delta":" a Responses text delta's
    if result.ttfb_ms is None and (b'"content"' in event or b'"delta":"' in event):
        result.ttfb_ms = (time.perf_counter() - started) * 1000
    if b'"type":"response.completed"' in event:
        result.done = True
    sent = _SENT.search(event)
    if sent:
        result.lags_ms.append((now_ns - int(sent.group(1))) / 1e6)


async def streams_on_one_connection(
    host: str, port: int, path: str, bodies: list[dict], key: str | None, timeout: float = 60.0
) -> list[StreamResult]:
    """Send streamed requests one after another on one keep-alive connection, as
    the SDKs do (their HTTP clients pool connections), and read each to its end."""
    results = []
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        for body in bodies:
            result = StreamResult()
            results.append(result)
            started = time.perf_counter()
            writer.write(request_bytes(host, port, path, body, key))
            try:
                await asyncio.wait_for(_read_one(reader, result, started), timeout)
            except Exception as exc:  # counted, not raised: the connection is done for
                result.error = result.error or type(exc).__name__
                break
    finally:
        writer.close()
    return results


async def _read_one(reader: asyncio.StreamReader, result: StreamResult, started: float) -> None:
    """Read one chunked SSE answer: up to its end (``[DONE]``, ``response.completed``) and
    the last chunk's ``0\\r\\n\\r\\n``."""
    buffer, head = b"", None
    while True:
        data = await reader.read(65536)
        if not data:
            result.error = result.error or "connection closed"
            return
        now_ns = time.time_ns()
        buffer += data
        if head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                continue
            head, buffer = buffer[:end], buffer[end + 4 :]
            result.status = int(head.split(b" ", 2)[1])
            if result.status != 200:
                result.error = "status"
                return
        cut = buffer.rfind(b"\n\n")
        if cut >= 0:
            complete, buffer = buffer[: cut + 2], buffer[cut + 2 :]
            for event in complete.split(b"\n\n"):
                start = event.find(b"data:")
                if start >= 0:
                    _note(result, event[start:], now_ns, started)
        if result.done and buffer.endswith(b"0\r\n\r\n"):
            return
