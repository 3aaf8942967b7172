"""What the API's blueprints (``/v1``, ``/admin/api``) share: the request id every answer
carries, the Bearer token a request presents, the JSON body, and the app's runtime."""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from tally.errors import BodyTooLarge, InvalidInput
from tally.logs import REQUEST_ID, new_request_id
from tally.runtime.process import Runtime

# Levels of arrays and objects a JSON body may nest: far more than any request needs
# (a chat body with a tool whose JSON schema nests 10 levels, OpenAI's own limit for
# structured outputs, is about 30 deep), and far from what recursion can take.
MAX_JSON_DEPTH = 128
BODY_CHUNK = 64 * 1024  # the reads of a chunked body
_NOT_JSON = "We could not parse the JSON body of your request. The body must be valid JSON."


def assign_request_id() -> None:
    """Every API call gets an id, returned as X-Request-Id, stored on its row and on the
    log lines written while it is served (tally.logs.REQUEST_ID, until
    :func:`forget_request_id`)."""
    g.request_id = new_request_id()
    REQUEST_ID.set(g.request_id)


def forget_request_id(_: BaseException | None = None) -> None:
    """The request is over: log lines no longer carry its id."""
    REQUEST_ID.set(None)


def with_request_id(response: Response) -> Response:
    """``response`` with the request's id, unless it has one (a fresh id when the request
    got none: an error before any view, such as a 404)."""
    response.headers.setdefault("X-Request-Id", g.get("request_id") or new_request_id())
    return response


def bearer_token() -> str:
    """The request's Bearer token (:func:`bearer_of` its Authorization header)."""
    return bearer_of(request.headers.get("Authorization", ""))


def bearer_of(authorization: str) -> str:
    """The token of ``Authorization: Bearer <token>``, stripped; empty when there is none."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def json_body() -> Any:
    """The Flask request's body as JSON (:func:`read_json`)."""
    return read_json(request.environ, current_app.config["MAX_CONTENT_LENGTH"])


def read_json(environ, limit: int) -> Any:
    """A request's body (:func:`read_body`) as JSON (:func:`parse_json`); BodyTooLarge
    (413) past ``limit`` bytes."""
    try:
        raw = read_body(environ, limit)
    except RequestEntityTooLarge:
        raise body_too_large(limit) from None
    return parse_json(raw)


def body_too_large(limit: int) -> BodyTooLarge:
    """The error of a request body over TALLY_MAX_BODY_BYTES (``limit``)."""
    return BodyTooLarge(f"The request body is larger than {limit} bytes.")


def read_body(environ, limit: int) -> bytes:
    """The request's body, at most ``limit`` bytes: RequestEntityTooLarge (413) past it,
    by its ``Content-Length`` before a byte is read, or as a chunked body arrives. A
    body of known length is read in one read of that length. (werkzeug's own stream
    gives the first ``limit`` bytes of a chunked body as the whole body: a 400 for JSON
    cut short, where the client must hear that its body is too large.) A body with no
    length and no end the server vouches for (``wsgi.input_terminated``) is not read,
    as werkzeug does not read it."""
    stream = environ["wsgi.input"]
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    length = environ.get("CONTENT_LENGTH", "")
    if length.isdigit() and not chunked:
        size = int(length)
        if size > limit:
            raise RequestEntityTooLarge()
        return stream.read(size) if size else b""
    if "wsgi.input_terminated" not in environ:
        return b""
    data = bytearray()
    while len(data) <= limit:
        piece = stream.read(min(BODY_CHUNK, limit + 1 - len(data)))
        if not piece:
            return bytes(data)
        data += piece
    raise RequestEntityTooLarge()


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON; InvalidInput (400) when it is not JSON (``NaN``, ``Infinity`` and
    a number too large for a float, ``1e999``, are not: no JSON column or upstream takes
    them) or nests deeper than MAX_JSON_DEPTH levels."""
    try:
        # json.loads(raw, parse_constant=…, parse_float=…) as it does it, with the decoder
        # built once instead of per request
        body = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except ValueError:
        raise InvalidInput(_NOT_JSON) from None
    except RecursionError:  # nested past what the parser can recurse into
        body = None
    else:
        # a body with fewer brackets than the limit cannot be nested past it (a count is
        # a few microseconds even at the size cap; a walk of the parsed body is not)
        if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH or within_depth(body):
            return body
    raise InvalidInput(
        f"The JSON body of your request nests arrays and objects more than "
        f"{MAX_JSON_DEPTH} levels deep."
    )


def within_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests arrays and objects at most ``limit`` levels deep (the
    body itself is level 1)."""
    pending = [(value, 1)] if isinstance(value, dict | list) else []
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return False
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"{text} is too large")
    return number


_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def runtime() -> Runtime:
    """The app's runtime (sessions, cache, pipeline, settings)."""
    return current_app.extensions["tally"]
