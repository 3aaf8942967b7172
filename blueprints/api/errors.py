"""The one place an API answer of an error is made, in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``), for the ``/v1`` API (its Flask
views and its calls served straight from WSGI, blueprints/api/calls.py), the admin API and
``/metrics``: a :class:`TallyError`, werkzeug's own HTTP errors on an API path (404, 405,
408, 413 …) and an unexpected error (500, logged). Which status, type and headers an
error gets is tally.proxy.openai_errors' to say."""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, current_app, g
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from blueprints.api.base import body_too_large, runtime, with_request_id
from tally import metrics
from tally.db import is_unavailable
from tally.errors import DatabaseUnavailable, InvalidInput, TallyError
from tally.outage import Outage
from tally.proxy.openai_errors import error_headers, error_object, status_of

# Named as before the API became a package: its log lines keep their logger name.
log = logging.getLogger("blueprints.api")


def register(bp: Blueprint) -> None:
    """Answer every error raised in ``bp``'s views in OpenAI's shape."""
    bp.register_error_handler(TallyError, error_response)
    bp.register_error_handler(Exception, unexpected_error_response)


def answered_as(
    error: BaseException, request_id: str | None, outage: Outage, max_body_bytes: int
) -> tuple[TallyError, int]:
    """What ``error`` is answered as, and with which status: a TallyError as it is (a
    database outage counted in the metrics); werkzeug's HTTP errors with their status (a
    413 as :func:`body_too_large`); a database that cannot be reached as a 503 (reported
    to ``outage``: logged once per outage); anything else as a 500, logged with
    ``request_id`` and its stack trace (call it in the ``except`` block), answered
    without it."""
    if isinstance(error, TallyError):
        if isinstance(error, DatabaseUnavailable):  # a database outage (tally.cache)
            metrics.record_database_unavailable()
        return error, status_of(error)
    if isinstance(error, RequestEntityTooLarge):
        return answered_as(body_too_large(max_body_bytes), request_id, outage, max_body_bytes)
    if isinstance(error, HTTPException):
        status = error.code or 500
        message = error.description or error.name
        # werkzeug's status stands; OpenAI's type is a client's error below 500, else the API's
        return (InvalidInput(message) if status < 500 else TallyError(message)), status
    if is_unavailable(error):
        outage.failed(error)
        return answered_as(DatabaseUnavailable(), request_id, outage, max_body_bytes)
    log.exception("unhandled error in request %s", request_id)
    return TallyError(f"Internal error (request {request_id}). It has been logged."), 500


def error_body(error: TallyError) -> bytes:
    """The body of an answer of ``error``: OpenAI's error object as JSON."""
    return json.dumps(error_object(error)).encode()


def error_response(error: TallyError) -> Response:
    """A domain error as an HTTP answer in OpenAI's shape."""
    return _answer(*_answered_as(error))


def http_error_response(exc: HTTPException) -> Response:
    """Werkzeug's own errors (404, 405, 413 …) on an API path, in OpenAI's shape."""
    response = _answer(*_answered_as(exc))
    return response if isinstance(exc, RequestEntityTooLarge) else with_request_id(response)


def unexpected_error_response(error: Exception) -> Response:
    """A bug: logged with the request id, answered without a stack trace. A database
    outage is no bug: 503 with Retry-After, logged once per outage."""
    if isinstance(error, HTTPException):
        return http_error_response(error)
    return _answer(*_answered_as(error))


def _answered_as(error: BaseException) -> tuple[TallyError, int]:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return answered_as(error, g.get("request_id"), runtime().cache.outage, limit)


def _answer(error: TallyError, status: int) -> Response:
    response = Response(error_body(error), status, mimetype="application/json")
    response.headers.update(error_headers(error))
    return response
