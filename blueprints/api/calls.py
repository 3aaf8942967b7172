"""The calls of the ``/v1`` API (``POST /v1/chat/completions``, ``/v1/responses``,
``/v1/embeddings``) on the HTTP side: the key, the verified end user, the body and the
headers a call takes, handed to the one pipeline (tally.proxy.pipeline).

:func:`serve` is that side, whoever serves the request. :class:`DirectCalls` serves it
straight from the WSGI environ; the Flask views in blueprints/api/v1.py serve it for what
:class:`DirectCalls` passes on: a request that carries an ``Origin`` (a browser: CORS
headers and preflights are the Flask blueprint's) and every other method and path.

Why not Flask for all of it: a call needs none of Flask's request context, URL map,
hooks or Response object, and they were a fifth of a worker's CPU per call
(docs/benchmarks.md, "The calls without Flask"). The answers are the same, header for
header (tests/api/test_direct_calls.py holds the two ways to each other).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from werkzeug.datastructures import EnvironHeaders
from werkzeug.http import HTTP_STATUS_CODES

from blueprints.api.base import bearer_of, read_json
from blueprints.api.errors import answered_as, error_body
from tally.errors import AuthenticationFailed, InvalidInput
from tally.keys.api_keys import AuthenticatedKey, authenticate
from tally.logs import REQUEST_ID, new_request_id
from tally.proxy.answers import ProxyResponse
from tally.proxy.endpoints.base import Endpoint
from tally.proxy.endpoints.chat import ChatCompletions
from tally.proxy.endpoints.embeddings import Embeddings
from tally.proxy.endpoints.responses import Responses
from tally.proxy.openai_errors import error_headers
from tally.proxy.pipeline import proxy, refuse_unread
from tally.proxy.upstream import PASSED_ON
from tally.runtime.process import Runtime
from tally.verification.idp import verify_end_user
from tally.verification.tokens import HEADER as USER_TOKEN

CHAT, RESPONSES, EMBEDDINGS = ChatCompletions(), Responses(), Embeddings()
ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": CHAT,
    "/v1/responses": RESPONSES,
    "/v1/embeddings": EMBEDDINGS,
}


def serve(
    app_runtime: Runtime,
    endpoint: Endpoint,
    key: AuthenticatedKey,
    headers: Mapping[str, str],
    read_body: Callable[[], Any],
    request_id: str,
) -> ProxyResponse:
    """One call to ``endpoint`` with ``key`` (:func:`require_key`): ``headers`` are the
    request's, ``read_body`` gives its body as JSON (raising InvalidInput when it cannot:
    a refusal once the key was accepted, recorded as a request row). Raises what the call
    is refused with."""
    verified = verified_user(app_runtime, key, headers.get(USER_TOKEN))
    header_user = headers.get("X-Tally-User")
    pipeline = app_runtime.pipeline
    try:
        body = read_body()
    except InvalidInput as exc:
        refuse_unread(pipeline, endpoint, key, exc, header_user, request_id, verified, headers)
        raise
    passed_on = {name: value for name in PASSED_ON if (value := headers.get(name))}
    # the request's headers go along for a caller's traceparent, read when traces are on
    return proxy(
        pipeline, endpoint, key, body, header_user, request_id, verified, passed_on or None, headers
    )


def require_key(app_runtime: Runtime, authorization: str) -> AuthenticatedKey:
    """The active key the ``Authorization`` header presents; a 401 without one."""
    token = bearer_of(authorization)
    if not token:
        raise AuthenticationFailed(
            "Missing API key: send it as 'Authorization: Bearer <Tally API key>'."
        )
    key = authenticate(app_runtime.sessions, token, app_runtime.cache)
    if key is None:
        raise AuthenticationFailed("Incorrect or revoked API key.")
    return key


def verified_user(app_runtime: Runtime, key: AuthenticatedKey, token: str | None):
    """The request's verified end user (None when no token is needed nor sent); a bad
    token is a 401, an unreachable identity provider a 503."""
    if not key.user_token and token is None:
        return None
    with app_runtime.sessions() as session:
        return verify_end_user(session, app_runtime.key_sets, key, token, app_runtime.cache)


class DirectCalls:
    """WSGI middleware: the calls of the ``/v1`` API answered here, without Flask (a
    ``POST`` to one of :data:`ENDPOINTS` with no ``Origin``); every other request goes
    on to ``app``."""

    def __init__(self, app, app_runtime: Runtime, config: Mapping[str, Any]):
        self.app = app
        self.runtime = app_runtime
        self.config = config  # the app's: MAX_CONTENT_LENGTH, read per request as Flask does

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        endpoint = ENDPOINTS.get(environ.get("PATH_INFO", ""))
        if endpoint is None or environ["REQUEST_METHOD"] != "POST" or "HTTP_ORIGIN" in environ:
            return self.app(environ, start_response)
        request_id = new_request_id()
        token = REQUEST_ID.set(request_id)
        try:
            headers = _Headers(environ)
            key = require_key(self.runtime, headers.get("Authorization", ""))
            body = functools.partial(read_json, environ, self.config["MAX_CONTENT_LENGTH"])
            result = serve(self.runtime, endpoint, key, headers, body, request_id)
            status, headers, body = result.status, result.headers, result.body
            if isinstance(body, bytes):
                headers["Content-Length"] = str(len(body))
                body = [body]
        except Exception as exc:  # as the Flask API's error handlers answer it
            limit = self.config["MAX_CONTENT_LENGTH"]
            error, status = answered_as(exc, request_id, self.runtime.cache.outage, limit)
            data = error_body(error)
            headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
            headers.update(error_headers(error))
            body = [data]
        finally:
            REQUEST_ID.reset(token)
        headers["X-Request-Id"] = request_id
        start_response(_status_line(status), list(headers.items()))
        return body


class _Headers(EnvironHeaders):
    """werkzeug's view of the request's headers in the environ, with ``get`` of a name
    Tally reads turned into its environ key once, not on every call."""

    KEYS: dict[str, str] = {}  # header name -> environ key, for the names asked for

    def get(self, key, default=None, type=None):  # noqa: A002 - werkzeug's signature
        """As werkzeug's ``get``."""
        name = self.KEYS.get(key)
        if name is None or type is not None:
            return super().get(key, default, type)
        return self.environ.get(name, default)


_Headers.KEYS.update(
    (name, "HTTP_" + name.upper().replace("-", "_"))
    for name in ("Authorization", "X-Tally-User", USER_TOKEN, "traceparent", "tracestate")
    + PASSED_ON
)


def _status_line(status: int) -> str:
    """``200 OK``, as werkzeug writes a status."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'unknown').upper()}"
