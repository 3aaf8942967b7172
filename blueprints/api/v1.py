"""The OpenAI-compatible API for frontends: ``/v1/chat/completions``, ``/v1/responses``,
``/v1/embeddings`` (each through the one pipeline in tally.proxy.pipeline) and
``/v1/models``.

Bearer Tally keys; every answer carries ``X-Request-Id``; every error is OpenAI's shape
(blueprints/api/errors.py).
"""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from blueprints.api.base import assign_request_id, bearer_token, json_body, runtime
from blueprints.api.end_users import add_cors, verified_user
from blueprints.api.errors import body_too_large
from blueprints.api.errors import register as serve_errors
from tally.errors import AuthenticationFailed, InvalidInput
from tally.keys.api_keys import AuthenticatedKey, authenticate
from tally.proxy.answers import ProxyResponse, list_models
from tally.proxy.endpoints.base import Endpoint
from tally.proxy.endpoints.chat import ChatCompletions
from tally.proxy.endpoints.embeddings import Embeddings
from tally.proxy.endpoints.responses import Responses
from tally.proxy.pipeline import limit_headers, proxy, refuse_unread
from tally.proxy.upstream import PASSED_ON

bp = Blueprint("api", __name__, url_prefix="/v1")
bp.before_request(assign_request_id)
serve_errors(bp)


@bp.after_request
def add_request_id(response: Response) -> Response:
    """Echo the request id to the client."""
    response.headers["X-Request-Id"] = g.get("request_id") or secrets.token_hex(16)
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
    """The upstream's model list, with the end user's X-RateLimit-* headers (a verified
    end user's when the key needs a token: what X-Tally-User says is then ignored)."""
    key = _require_key()
    verified = verified_user(key)
    result = list_models(runtime().upstream)
    header_user = request.headers.get("X-Tally-User")
    headers = limit_headers(runtime().pipeline, key, {}, header_user, verified)
    result.headers.update(headers)
    return _send(result)


def _proxy(endpoint: Endpoint) -> Response:
    key = _require_key()
    verified = verified_user(key)
    header_user = request.headers.get("X-Tally-User")
    pipeline = runtime().pipeline
    try:
        body = _json_body()
    except InvalidInput as exc:  # a refusal once the key was accepted: a request row
        refuse_unread(
            pipeline, endpoint, key, exc, header_user, g.request_id, verified, request.headers
        )
        raise
    passed_on = {name: value for name in PASSED_ON if (value := request.headers.get(name))}
    return _send(
        proxy(
            pipeline,
            endpoint,
            key,
            body,
            header_user,
            g.request_id,
            verified,
            passed_on or None,
            request.headers,  # a caller's traceparent, read when traces are on
        )
    )


def _require_key() -> AuthenticatedKey:
    token = bearer_token()
    if not token:
        raise AuthenticationFailed(
            "Missing API key: send it as 'Authorization: Bearer <Tally API key>'."
        )
    app_runtime = runtime()
    key = authenticate(app_runtime.sessions, token, app_runtime.cache)
    if key is None:
        raise AuthenticationFailed("Incorrect or revoked API key.")
    return key


def _json_body():
    """The body as JSON (blueprints.api.base.json_body), a 413 when it is too large."""
    try:
        return json_body()
    except RequestEntityTooLarge:
        raise body_too_large() from None


def _send(result: ProxyResponse) -> Response:
    return Response(result.body, result.status, headers=result.headers, direct_passthrough=True)
