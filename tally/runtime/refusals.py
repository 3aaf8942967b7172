"""gunicorn's own refusals, in Tally's voice: a request gunicorn will not hand to the app
(a request line past ``limit_request_line``: 414; headers past ``limit_request_fields`` or
``limit_request_field_size``: 431; a request that is not HTTP: 400; an unknown transfer
coding: 501) is answered by its workers' ``handle_error`` with a small HTML page of
gunicorn's own. Tally answers them as it answers everything else: in OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``) on the API's paths, as a plain page
(no script, no gunicorn markup) anywhere else.

gunicorn's ``Worker.handle_error`` still decides the status, the reason and the log line;
only the answer it writes (``gunicorn.util.write_error``, looked up at each call) is
Tally's, for the duration of that call. Installed with tally.runtime.serving, on the
gunicorn releases it was checked against (tests/runtime/test_serving_internals.py).
"""

from __future__ import annotations

import contextvars
import html
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from gunicorn import util
from gunicorn.workers import base

from tally.errors import InvalidInput, TallyError
from tally.proxy.openai_errors import error_object

# Paths whose clients read JSON: the OpenAI-compatible API and the admin API.
JSON_PATHS = ("/v1/", "/admin/api/")
CODES = {
    400: "invalid_request",
    403: "forbidden",
    414: "request_line_too_long",
    417: "expectation_failed",
    431: "request_headers_too_large",
    501: "unsupported_transfer_coding",
}
# What a person at the console is told, by status (else gunicorn's reason and message).
ADVICE = {
    414: "The address of this page is too long for the server.",
    431: "Your browser sent more headers or cookies than the server accepts. Clear this "
    "site's cookies, then try again.",
    400: "The server could not read this request.",
}
SCANNED = 8192  # bytes of a request's start looked at for its path


@dataclass(frozen=True)
class Refusal:
    """What the worker's ``handle_error`` is answering: the request's path, if known."""

    path: str | None


_refusal: contextvars.ContextVar[Refusal | None] = contextvars.ContextVar(
    "tally_refusal", default=None
)
_gunicorn_handle_error = base.Worker.handle_error
_gunicorn_write_error = util.write_error


def handle_error(self, req, client, addr, exc):
    """gunicorn's ``Worker.handle_error``, with Tally's answer (:func:`write_error`)."""
    token = _refusal.set(Refusal(request_path(req, exc)))
    try:
        return _gunicorn_handle_error(self, req, client, addr, exc)
    finally:
        _refusal.reset(token)


def write_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error`` as Tally answers it: JSON on the API's paths, a
    plain page elsewhere; gunicorn's own outside :func:`handle_error`."""
    refusal = _refusal.get()
    if refusal is None:
        return _gunicorn_write_error(sock, status_int, reason, mesg)
    if is_api(refusal.path):
        body, kind = api_error(status_int, reason, mesg), "application/json"
    else:
        body, kind = page(status_int, reason, mesg), "text/html; charset=utf-8"
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Content-Security-Policy: default-src 'none'\r\n"
        "\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)
    return None


def is_api(path: str | None) -> bool:
    """Whether a refusal of ``path`` answers in OpenAI's shape."""
    return path is not None and (path == "/v1" or path.startswith(JSON_PATHS))


def api_error(status: int, reason: str, mesg: str) -> bytes:
    """OpenAI's error object for a refusal (the message: gunicorn's reason and detail)."""
    message = f"{reason}: {mesg}" if mesg else reason
    if status < 500:
        error: TallyError = InvalidInput(message, code=CODES.get(status, "invalid_request"))
    else:
        error = TallyError("Internal error. It has been logged.", code="internal_error")
    return json.dumps(error_object(error)).encode()


def page(status: int, reason: str, mesg: str) -> bytes:
    """A plain page for a person: the status, what to do, and gunicorn's detail."""
    advice = ADVICE.get(status, "")
    detail = mesg if status < 500 else ""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{status} {html.escape(reason)} · Tally</title></head><body>",
        f"<h1>{status} · {html.escape(reason)}</h1>",
    ]
    if advice:
        parts.append(f"<p>{html.escape(advice)}</p>")
    if detail:
        parts.append(f"<p><small>{html.escape(detail)}</small></p>")
    parts.append("</body></html>\n")
    return "\n".join(parts).encode()


def request_path(req, exc: BaseException) -> str | None:
    """The path of the request gunicorn refused: from the request when it was parsed that
    far, else from the request line as read so far (the parser's frames in the
    exception's traceback hold it: a line too long never becomes a request)."""
    for candidate in (req, getattr(exc, "req", None)):
        path = getattr(candidate, "path", None)
        if isinstance(path, str) and path:
            return path
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals.get("__name__") == "gunicorn.http.message":
            path = getattr(frame.f_locals.get("self"), "path", None)
            if isinstance(path, str) and path:
                return path
            for name in ("buf", "data"):
                raw = frame.f_locals.get(name)
                if isinstance(raw, bytes | bytearray) and raw:
                    return path_of_line(bytes(raw[:SCANNED]))
        tb = tb.tb_next
    return None


def path_of_line(raw: bytes) -> str | None:
    """The path of a request line's target (``POST /v1/x?y HTTP/1.1`` → ``/v1/x``), also
    of one cut short or of absolute form; None when there is none."""
    line = raw.lstrip(b"\r\n").split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[1]:
        return None
    target = parts[1].decode("latin-1")
    if target.lower().startswith(("http://", "https://")):
        try:
            return urlsplit(target).path or "/"
        except ValueError:
            return None
    return target.split("?", 1)[0].split("#", 1)[0] or None


def install() -> None:
    """Make every gunicorn worker (of any class) answer its refusals so."""
    base.Worker.handle_error = handle_error
    util.write_error = write_error
