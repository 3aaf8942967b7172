"""What the API's blueprints (``/v1``, ``/admin/api``) share: the request id every answer
carries, the Bearer token a request presents, and the app's runtime."""

from __future__ import annotations

import uuid

from flask import Response, current_app, g, request

from tally.runtime.process import Runtime


def assign_request_id() -> None:
    """Every API call gets an id, returned as X-Request-Id and stored on its row."""
    g.request_id = uuid.uuid4().hex


def with_request_id(response: Response) -> Response:
    """``response`` with the request's id, unless it has one (a fresh id when the request
    got none: an error before any view, such as a 404)."""
    response.headers.setdefault("X-Request-Id", g.get("request_id") or uuid.uuid4().hex)
    return response


def bearer_token() -> str:
    """The token of ``Authorization: Bearer <token>``, stripped; empty when there is none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def runtime() -> Runtime:
    """The app's runtime (sessions, cache, pipeline, settings)."""
    return current_app.extensions["tally"]
