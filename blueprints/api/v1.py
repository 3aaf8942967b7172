"""The OpenAI-compatible API for frontends: ``/v1/chat/completions``, ``/v1/responses``,
``/v1/embeddings`` (each through the one pipeline in tally.proxy.pipeline) and
``/v1/models``.

Bearer Tally keys; every answer carries ``X-Request-Id``; every error is OpenAI's shape
(blueprints/api/errors.py). A call without an ``Origin`` is answered before it reaches
this blueprint (blueprints/api/calls.py, ``DirectCalls``); its views here serve the rest
(browsers: their CORS headers and preflights are this blueprint's) through the same
:func:`~blueprints.api.calls.serve`.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from blueprints.api.base import assign_request_id, forget_request_id, json_body, runtime
from blueprints.api.calls import CHAT, EMBEDDINGS, RESPONSES, require_key, serve
from blueprints.api.end_users import add_cors, verified_user
from blueprints.api.errors import register as serve_errors
from tally.logs import new_request_id
from tally.proxy.answers import ProxyResponse, list_models
from tally.proxy.endpoints.base import Endpoint
from tally.proxy.pipeline import limit_headers

bp = Blueprint("api", __name__, url_prefix="/v1")
bp.before_request(assign_request_id)
bp.teardown_request(forget_request_id)
serve_errors(bp)


@bp.after_request
def add_request_id(response: Response) -> Response:
    """Echo the request id to the client."""
    response.headers["X-Request-Id"] = g.get("request_id") or new_request_id()
    return add_cors(response)


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
    app_runtime = runtime()
    key = require_key(app_runtime, request.headers.get("Authorization", ""))
    verified = verified_user(key)
    result = list_models(app_runtime.upstream)
    header_user = request.headers.get("X-Tally-User")
    headers = limit_headers(app_runtime.pipeline, key, {}, header_user, verified)
    result.headers.update(headers)
    return _send(result)


def _proxy(endpoint: Endpoint) -> Response:
    app_runtime = runtime()
    key = require_key(app_runtime, request.headers.get("Authorization", ""))
    g.api_key = key  # the answer's CORS headers are the key's
    return _send(serve(app_runtime, endpoint, key, request.headers, json_body, g.request_id))


def _send(result: ProxyResponse) -> Response:
    return Response(result.body, result.status, headers=result.headers, direct_passthrough=True)
