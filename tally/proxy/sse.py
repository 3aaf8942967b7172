"""Server-sent events, split as they arrive.

Upstream chunks are cut anywhere; Tally relays whole events, one at a time, the moment
each is complete, and never parses a comment line (``: OPENROUTER PROCESSING``) as JSON.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class EventSplitter:
    """Feed it raw bytes; it returns each complete event with its blank-line terminator."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add ``chunk`` and return the events it completed, in order."""
        self._buffer += chunk
        events = []
        start = 0
        for match in _BOUNDARY.finditer(self._buffer):
            events.append(self._buffer[start : match.end()])
            start = match.end()
        self._buffer = self._buffer[start:]
        return events

    def rest(self) -> bytes:
        """Whatever arrived after the last complete event (normally nothing)."""
        rest, self._buffer = self._buffer, b""
        return rest


def event_data(event: bytes) -> str | None:
    """The event's ``data`` field (lines joined by newlines), or None for a comment."""
    lines = []
    for line in event.decode("utf-8", errors="replace").splitlines():
        if line.startswith("data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(" ") else value)
    return "\n".join(lines) if lines else None


def encode_event(data: str) -> bytes:
    """One ``data:`` event, terminated."""
    return b"data: " + data.encode("utf-8") + b"\n\n"
