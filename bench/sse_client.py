"""A small asyncio HTTP/1.1 client for streamed chat completions (benchmarks only).

It writes the request by hand and reads the chunked SSE answer as it arrives, noting
when each event lands. The mock upstream stamps every event with ``sent_ns``, so the
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
        """A 200 that ended with [DONE]."""
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


async def stream_once(
    host: str, port: int, path: str, body: dict, key: str | None, timeout: float = 60.0
) -> StreamResult:
    """Send one streamed chat completion and read it to the end."""
    result = StreamResult()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        started = time.perf_counter()
        writer.write(request_bytes(host, port, path, body, key))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        result.status = int(head.split(b" ", 2)[1])
        chunked = b"transfer-encoding: chunked" in head.lower()
        buffer = b""
        while True:
            if chunked:
                size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    break
                data = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                data = data[:-2]
            else:
                data = await asyncio.wait_for(reader.read(65536), timeout)
                if not data:
                    break
            now_ns = time.time_ns()
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                _note(result, event, now_ns, started)
            if result.done:
                break
    except Exception as exc:  # a benchmark counts failures, it does not stop on them
        result.error = type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
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
    if result.ttfb_ms is None and b'"content"' in event:
        result.ttfb_ms = (time.perf_counter() - started) * 1000
    sent = _SENT.search(event)
    if sent:
        result.lags_ms.append((now_ns - int(sent.group(1))) / 1e6)
