"""The built-in demo upstream over HTTP, at ``/demo/v1``. A demo: it calls no model."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, request

from tally.demo import upstream as demo

bp = Blueprint("demo", __name__, url_prefix="/demo/v1")


@bp.route("/<path:path>", methods=["GET", "POST"])
def upstream(path: str):
    """Answer like an OpenAI-compatible upstream would, from canned text."""
    try:
        body = json.loads(request.get_data()) if request.method == "POST" else None
    except (ValueError, RecursionError):  # not JSON, or nested past recursion
        body = None
    delay = current_app.config.get("DEMO_TOKEN_DELAY", 0.03)
    status, headers, chunks = demo.respond(request.method, "/" + path, body, delay)
    return Response(chunks, status, headers=headers, direct_passthrough=True)
