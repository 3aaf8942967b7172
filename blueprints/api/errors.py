"""The one place an API answer of an error is made, in OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``), for the ``/v1`` API, the admin
API and ``/metrics``: a :class:`TallyError`, werkzeug's own HTTP errors on an API path
(404, 405, 413 …) and an unexpected error (500, logged). Which status, type and headers
an error gets is tally.proxy.openai_errors' to say."""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, current_app, g
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from blueprints.api.base import runtime, with_request_id
from tally import metrics
from tally.db import is_unavailable
from tally.errors import BodyTooLarge, DatabaseUnavailable, InvalidInput, TallyError
from tally.proxy.openai_errors import error_headers, error_object, status_of

# Named as before the API became a package: its log lines keep their logger name.
log = logging.getLogger("blueprints.api")


def register(bp: Blueprint) -> None:
    """Answer every error raised in ``bp``'s views in OpenAI's shape."""
    bp.register_error_handler(TallyError, error_response)
    bp.register_error_handler(Exception, unexpected_error_response)


def error_response(error: TallyError) -> Response:
    """A domain error as an HTTP answer in OpenAI's shape."""
    if isinstance(error, DatabaseUnavailable):  # a database outage (tally.cache)
        metrics.record_database_unavailable()
    return _answer(error, status_of(error))


def http_error_response(exc: HTTPException) -> Response:
    """Werkzeug's own errors (404, 405, 413 …) on an API path, in OpenAI's shape."""
    if isinstance(exc, RequestEntityTooLarge):
        return error_response(body_too_large())
    status = exc.code or 500
    message = exc.description or exc.name
    # werkzeug's status stands; OpenAI's type is a client's error below 500, else the API's
    error = InvalidInput(message) if status < 500 else TallyError(message)
    return with_request_id(_answer(error, status))


def body_too_large() -> BodyTooLarge:
    """The error of a request body over TALLY_MAX_BODY_BYTES (werkzeug's 413)."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return BodyTooLarge(f"The request body is larger than {limit} bytes.")


def unexpected_error_response(error: Exception) -> Response:
    """A bug: logged with the request id, answered without a stack trace. A database
    outage is no bug: 503 with Retry-After, logged once per outage."""
    if isinstance(error, HTTPException):
        return http_error_response(error)
    if is_unavailable(error):
        runtime().cache.outage.failed(error)
        return error_response(DatabaseUnavailable())
    log.exception("unhandled error in request %s", g.get("request_id"))
    return error_response(
        TallyError(f"Internal error (request {g.get('request_id')}). It has been logged.")
    )


def _answer(error: TallyError, status: int) -> Response:
    response = Response(json.dumps(error_object(error)), status, mimetype="application/json")
    response.headers.update(error_headers(error))
    return response
