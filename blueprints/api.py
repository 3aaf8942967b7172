"""The OpenAI-compatible API for frontends: ``/v1/chat/completions``, ``/v1/responses``,
``/v1/embeddings`` (each through the one pipeline in tally.proxy.pipeline) and
``/v1/models``.

Bearer Tally keys; every answer carries ``X-Request-Id``; every error is OpenAI's shape.
"""

from __future__ import annotations

import json
import logging
import uuid

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from blueprints.api_users import add_cors, verified_user
from tally import metrics
from tally.db import is_unavailable
from tally.errors import (
    AuthenticationFailed,
    BodyTooLarge,
    DatabaseUnavailable,
    InvalidInput,
    TallyError,
)
from tally.keys.api_keys import AuthenticatedKey, authenticate
from tally.proxy.answers import ProxyResponse, list_models
from tally.proxy.endpoints.base import Endpoint
from tally.proxy.endpoints.chat import ChatCompletions
from tally.proxy.endpoints.embeddings import Embeddings
from tally.proxy.endpoints.responses import Responses
from tally.proxy.openai_errors import error_headers, error_object, status_of
from tally.proxy.pipeline import limit_headers, proxy
from tally.runtime.process import Runtime

bp = Blueprint("api", __name__, url_prefix="/v1")
log = logging.getLogger(__name__)


@bp.before_request
def assign_request_id() -> None:
    """Every API call gets an id, returned as X-Request-Id and stored on its row."""
    g.request_id = uuid.uuid4().hex


@bp.after_request
def add_request_id(response: Response) -> Response:
    """Echo the request id to the client."""
    response.headers["X-Request-Id"] = g.get("request_id") or uuid.uuid4().hex
    return add_cors(response)


CHAT, RESPONSES, EMBEDDINGS = ChatCompletions(), Responses(), Embeddings()


@bp.post("/chat/completions")
def chat_completions():
    """Proxy one chat completion (streaming or not) with the end user's identifier."""
    return _proxy(CHAT)


@bp.post("/responses")
def responses():
    """Proxy one Responses API call (streaming or not) with the end user's identifier."""
    return _proxy(RESPONSES)


@bp.post("/embeddings")
def embeddings():
    """Proxy one embeddings call with the end user's identifier."""
    return _proxy(EMBEDDINGS)


@bp.get("/models")
def models():
    """The upstream's model list."""
    key = _require_key()
    verified_user(key)
    result = list_models(_runtime().upstream)
    headers = limit_headers(_runtime().pipeline, key, {}, request.headers.get("X-Tally-User"))
    result.headers.update(headers)
    return _send(result)


def error_response(error: TallyError) -> Response:
    """The one place a domain error becomes an HTTP answer in OpenAI's shape."""
    if isinstance(error, DatabaseUnavailable):  # a database outage (tally.cache, below)
        metrics.record_database_unavailable()
    body = json.dumps(error_object(error))
    response = Response(body, status_of(error), mimetype="application/json")
    response.headers.update(error_headers(error))
    return response


def http_error_response(exc: HTTPException) -> Response:
    """Werkzeug's own errors (404, 405, 413 …) on an API path, in OpenAI's shape."""
    if isinstance(exc, RequestEntityTooLarge):
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return error_response(BodyTooLarge(f"The request body is larger than {limit} bytes."))
    status = exc.code or 500
    kind = "invalid_request_error" if status < 500 else "api_error"
    error = {"message": exc.description or exc.name, "type": kind, "param": None, "code": None}
    body = json.dumps({"error": error})
    return _with_request_id(Response(body, status, mimetype="application/json"))


@bp.errorhandler(TallyError)
def handle_tally_error(error: TallyError):
    """Domain errors raised by services."""
    return error_response(error)


@bp.errorhandler(Exception)
def handle_unexpected(error: Exception):
    """A bug: log it with the request id, answer without a stack trace. A database
    outage is no bug: 503 with Retry-After."""
    if isinstance(error, HTTPException):
        return http_error_response(error)
    if is_unavailable(error):  # an outage, not a bug: 503, logged once per outage
        _runtime().cache.outage.failed(error)
        return error_response(DatabaseUnavailable())
    log.exception("unhandled error in request %s", g.get("request_id"))
    return error_response(
        TallyError(f"Internal error (request {g.get('request_id')}). It has been logged.")
    )


def _proxy(endpoint: Endpoint) -> Response:
    key = _require_key()
    verified = verified_user(key)
    body = _json_body()
    header_user = request.headers.get("X-Tally-User")
    pipeline = _runtime().pipeline
    return _send(proxy(pipeline, endpoint, key, body, header_user, g.request_id, verified))


def _require_key() -> AuthenticatedKey:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed(
            "Missing API key: send it as 'Authorization: Bearer <Tally API key>'."
        )
    runtime = _runtime()
    with runtime.sessions() as session:
        key = authenticate(session, token.strip(), runtime.cache)
    if key is None:
        raise AuthenticationFailed("Incorrect or revoked API key.")
    return key


def _json_body():
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidInput(
            "We could not parse the JSON body of your request. The body must be valid JSON."
        ) from None


def _send(result: ProxyResponse) -> Response:
    return Response(result.body, result.status, headers=result.headers, direct_passthrough=True)


def _with_request_id(response: Response) -> Response:
    response.headers.setdefault("X-Request-Id", g.get("request_id") or uuid.uuid4().hex)
    return response


def _runtime() -> Runtime:
    return current_app.extensions["tally"]
