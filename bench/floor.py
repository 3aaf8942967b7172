"""The floor: the least a gateway in Tally's place does, in bare Flask + urllib3 under gunicorn.

It checks the bearer key (a dict lookup), reads the JSON body, replaces ``user`` with
its HMAC-SHA256 (Tally's default hash), and forwards the body to the same path of the
upstream through one urllib3 ``HTTPConnectionPool``; streams are relayed piece by piece
as they arrive. No database, no logging, no usage rows. bench/run.py serves it beside
Tally, as Tally is served (gunicorn.conf.py's settings and server hooks, no usage writer
process: bench/floor_gunicorn.conf.py), to show how much of Tally's cost is Flask,
gunicorn and urllib3 themselves.

    TALLY_BIND=127.0.0.1:9200 gunicorn --config bench/floor_gunicorn.conf.py \\
        "bench.floor:create_app(upstream_port=9100, key='sk-floor')"
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator

import urllib3
from flask import Flask, Response, request

ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")


def create_app(upstream_port: int, key: str, hash_key: str = "floor", host="127.0.0.1") -> Flask:
    """The floor app: ``key`` is the one bearer key it takes; the upstream is on ``host``."""
    app = Flask(__name__)
    keys = {key: "bench"}
    secret = hash_key.encode()
    pool = urllib3.HTTPConnectionPool(host, upstream_port, maxsize=256, block=False)
    timeout = urllib3.Timeout(connect=5, read=120)

    def forward() -> Response:
        """Check the key, hash ``user``, forward the body and relay the answer."""
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if keys.get(bearer) is None:
            return Response(b'{"error":{"message":"bad key"}}', 401, mimetype="application/json")
        body = request.get_json()
        if isinstance(body.get("user"), str):
            digest = hmac.new(secret, body["user"].encode(), hashlib.sha256).hexdigest()
            body["user"] = "tally_" + digest[:16]
        answer = pool.urlopen(
            "POST",
            request.path,
            body=json.dumps(body, separators=(",", ":")).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-floor"},
            timeout=timeout,
            retries=False,
            preload_content=False,
            decode_content=False,
        )
        kind = answer.headers.get("Content-Type", "application/json")
        if not kind.startswith("text/event-stream"):
            data = answer.read()
            answer.release_conn()
            return Response(data, answer.status, content_type=kind)
        return Response(relay(answer), answer.status, content_type=kind)

    for path in ENDPOINTS:
        app.add_url_rule(path, path, forward, methods=["POST"])
    app.add_url_rule("/healthz", "healthz", lambda: "ok")
    return app


def relay(answer: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """Each piece of a streamed answer as soon as it is read (one chunk, or less)."""
    done = False
    try:
        while piece := answer.read1():
            yield piece
        done = True
    finally:
        if not done:
            answer.close()  # the client left mid-stream: this connection is not reusable
        answer.release_conn()
