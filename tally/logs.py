"""Structured logs: one JSON object per line on stderr, with the request id (or, with
``TALLY_LOG_FORMAT=text``, one plain line per record).

A record is one line whatever a client sent: JSON escapes every line break, and the text
format escapes line breaks and other control characters (a traceback included), so no
path or value can forge a line of its own. Nothing secret is written: API keys
(``tly_…``), admin API tokens (``tadm_…``), bearer tokens, the upstream API key and the
HMAC key are masked in every message and traceback, in both formats, and the engine hides
SQL parameters from its errors (``tally.db``), so an internal user id never reaches a log
line through a failed statement. Log lines carry request ids, never user ids: a request
id leads to its usage row, and from there to the user, only for someone allowed to read
the database.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO

_HANDLER_NAME = "tally.json"
# LogRecord's own attributes: whatever else a record carries came in through ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_PATTERNS = [
    (re.compile(r"tly_[A-Za-z0-9_-]{8,}"), "tly_[redacted]"),  # API keys (tally.keys)
    (re.compile(r"tadm_[A-Za-z0-9_-]{8,}"), "tadm_[redacted]"),  # admin API tokens
    (re.compile(r"(?i)(bearer\s+)[^\s'\",]+"), r"\1[redacted]"),
]
_MARKERS = ("tly_", "tadm_", "bearer")
# What would break a line, or hide what a line says: control characters (C0, DEL, C1),
# Unicode's line and paragraph separators, and the backslash that starts an escape.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


class Redactor:
    """Masks API keys, admin API tokens, bearer tokens and the given secrets in text."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        self._secrets = [s for s in secrets if s and len(s) >= 6]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        lowered = text.lower()  # substring checks first: most lines hold nothing to mask
        for (pattern, replacement), marker in zip(_PATTERNS, _MARKERS, strict=True):
            if marker in lowered:
                text = pattern.sub(replacement, text)
        return text


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", …extra, "exc"}`` per line."""

    def __init__(self, redact: Redactor | None = None):
        super().__init__()
        self._redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        fields = {name: value for name, value in vars(record).items() if name not in _STANDARD}
        request_id = fields.get("request_id") or current_request_id()
        exc = self.formatException(record.exc_info) if record.exc_info else None
        message = record.getMessage()
        return self._line(
            record.created, record.levelname, record.name, message, request_id, fields, exc
        )

    def line_of(self, created: float, name: str, message: str, fields: dict) -> str:
        """The line :meth:`format` makes of an INFO record of logger ``name`` with this
        ``message`` and ``fields`` as its extra, without building the record (the access
        log's line, once per request: a third of what the record cost)."""
        return self._line(created, "INFO", name, message, fields.get("request_id"), fields, None)

    def access_line(
        self,
        created: float,
        name: str,
        method: str,
        path: str,
        status: int,
        duration_ms: float,
        request_id: str | None,
    ) -> str:
        """:meth:`line_of` for the access log's fields (method, path, status, duration,
        request id), written out: the line per request, with a standard method not run
        through the redactor (nothing in ``GET`` to mask). The same line, tested."""
        redact = self._redact
        message = redact(f"{method} {path} {status}")
        if method not in _METHODS:
            method = redact(method)
        ts = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        head = f'{{"ts": "{ts}", "level": "INFO", "logger": {_string(name)}, '
        head += f'"message": {_string(message)}, '
        if request_id:
            head += f'"request_id": {_value(request_id)}, '
        duration = _value(duration_ms)
        return _safe_line(
            f'{head}"method": {_string(method)}, "path": {_string(redact(path))}, '
            f'"status": {_value(status)}, "duration_ms": {duration}}}'
        )

    def _line(self, created, level, name, message, request_id, fields, exc) -> str:
        """``{"ts", "level", "logger", "message", "request_id", …fields, "exc"}``, each value
        encoded as ``json.dumps`` would, strings masked (the request id is not)."""
        ts = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        parts = [f'{{"ts": "{ts}", "level": {_string(level)}, "logger": {_string(name)}']
        parts.append(f'"message": {_string(self._redact(message))}')
        if request_id:
            parts.append(f'"request_id": {_value(request_id)}')
        for key, value in fields.items():
            if key in _HEAD or (key == "request_id" and request_id) or (key == "exc" and exc):
                continue
            value = self._redact(value) if isinstance(value, str) else value
            parts.append(f"{_string(key)}: {_value(value)}")
        if exc is not None:
            parts.append(f'"exc": {_string(self._redact(exc))}')
        return _safe_line(", ".join(parts) + "}")


_HEAD = frozenset({"ts", "level", "logger", "message"})  # a line's own keys, before extras
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_string = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes


def _value(value) -> str:
    """``value`` as ``json.dumps(value, default=str, ensure_ascii=False)`` writes it."""
    if isinstance(value, str):
        return _string(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return json.dumps(value, default=str, ensure_ascii=False)


def _safe_line(line: str) -> str:
    """A line of JSON with what would end it early for some readers escaped."""
    # JSON leaves these raw, and many readers (Python's splitlines too) end lines there
    return line.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


class TextFormatter(logging.Formatter):
    r"""``time LEVEL logger message`` on one line, a traceback included (its line breaks
    escaped as ``\n``), secrets masked as in the JSON format."""

    def __init__(self, redact: Redactor | None = None):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of text."""
        return one_line(self._redact(super().format(record)))


def one_line(text: str) -> str:
    r"""``text`` with control characters, line separators and backslashes escaped
    (``\n``, ``\r``, ``\t``, ``\\``, ``\x1b``, ``\u2028``): one line, read unambiguously."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


# The id of the API request being served in this context (thread or greenlet), set by
# the API while it serves one (blueprints/api/).
REQUEST_ID: ContextVar[str | None] = ContextVar("tally_request_id", default=None)


def new_request_id() -> str:
    """A fresh request id: 32 hex digits, the first 12 the milliseconds since the epoch and
    the other 20 random (80 bits). Ids made later sort later, so each row's entry in the
    request log's unique index on ``request_id`` goes at its end, not at a random page:
    with random ids, a batch of rows dirtied one page of that index per row, which the
    commit then wrote out (bench numbers in docs/benchmarks.md)."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def current_request_id() -> str | None:
    """The id of the request being served here, if any (:data:`REQUEST_ID`)."""
    return REQUEST_ID.get()


def configure_logging(
    fmt: str = "json", secrets: Iterable[str | None] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """Send Tally's and gunicorn's logs to ``stream`` (stderr) as JSON lines (or as plain
    text lines with ``fmt="text"``), ``secrets`` masked. Calling it again replaces the
    handler it installed."""
    handler = LineHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    handler.setFormatter(formatter(Redactor(secrets)))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    # alembic announces each of its plugins at INFO whenever a command imports it
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    return handler


class LineHandler(logging.StreamHandler):
    """The stream handler :func:`configure_logging` installs; it can also take a line
    formatted without a record (:meth:`JsonFormatter.line_of`)."""

    def write_line(self, line: str) -> None:
        """Write ``line`` as :meth:`emit` writes a formatted record."""
        with self.lock:
            try:
                self.stream.write(line + self.terminator)
                self.flush()
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": line}))


def direct_handler(logger: logging.Logger) -> LineHandler | None:
    """The handler an INFO record of ``logger`` would reach, when that is only Tally's own
    JSON handler with no filter on the way: a line can then be handed to it directly,
    and it is the line the record would have made. None otherwise (an operator's own
    handler or filter, the text format): then records go through ``logging``."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.parent is None:  # the root
            break
        if current.handlers:
            return None
        if not current.propagate:
            return None
        current = current.parent
    handlers = current.handlers if current is not None else []
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if (
        not isinstance(handler, LineHandler)
        or handler.filters
        or handler.level > logging.INFO
        or not isinstance(handler.formatter, JsonFormatter)
    ):
        return None
    return handler
