"""Loopback receivers of Tally's sink events, recording what they get: a Stripe-style
meter events endpoint, an OpenMeter-style CloudEvents endpoint, a Standard Webhooks
receiver (verifying each signature with tally.sinks.signing's verifier, itself checked
against the spec's test vector) and a Slack-style incoming webhook. One server answers
all four paths; it can be taken down (its port closed) and brought back on the same
port, or told to answer a status."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tally.sinks.signing import verify

HOST = "127.0.0.1"


@dataclass
class Got:
    """One request received."""

    path: str
    headers: dict[str, str]
    body: bytes
    valid_signature: bool | None = None

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Receiver:
    """The receivers on one loopback port. ``statuses`` (path suffix -> a list of statuses
    to answer, in turn; then 200) scripts failures; ``refuse`` (an event id -> status)
    refuses one event for good; ``failing`` (a status) is answered to every request
    while set. ``tries`` notes every request that reached it, answered or not:
    (``time.monotonic()``, path, the event ids it carried, the status answered)."""

    webhook_secret: str | None = None
    got: list[Got] = field(default_factory=list)
    statuses: dict[str, list[int]] = field(default_factory=dict)
    refuse: dict[str, int] = field(default_factory=dict)
    failing: int | None = None
    tries: list[tuple[float, str, list[str], int]] = field(default_factory=list)

    def __post_init__(self):
        self._server = None
        self.port = 0
        self.up()
        self.url = f"http://{HOST}:{self.port}"

    def up(self) -> None:
        """Serve (again, on the same port)."""
        self._server = make_server(HOST, self.port, self.wsgi, threaded=True)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def down(self) -> None:
        """Stop serving: connections are refused."""
        self._server.shutdown()
        self._server.server_close()

    def on(self, path: str) -> list[Got]:
        """What arrived at ``path``."""
        return [got for got in self.got if got.path == path]

    def wsgi(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items()}
        got = Got(request.path, headers, body)
        if request.path == "/hook" and self.webhook_secret:
            got.valid_signature = verify(self.webhook_secret, headers, body, int(time.time()))
        status = self._status(got)
        self.tries.append((time.monotonic(), got.path, _ids(got), status))
        if status != 200:
            body = "busy" if status >= 500 else '{"error": "bad event"}'
            return Response(body, status)(environ, start_response)
        self.got.append(got)
        return Response("{}", 200, mimetype="application/json")(environ, start_response)

    def _status(self, got: Got) -> int:
        if self.failing is not None:
            return self.failing
        for suffix, queue in self.statuses.items():
            if got.path.endswith(suffix) and queue:
                return queue.pop(0)
        return next((self.refuse[i] for i in _ids(got) if i in self.refuse), 200)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.down()


def _ids(got: Got) -> list[str]:
    if got.path.endswith("/meter_events"):
        return [got.form.get("identifier", "")]
    try:
        parsed = got.json
    except ValueError:
        return []
    items = parsed if isinstance(parsed, list) else [parsed]
    return [item.get("id", "") for item in items if isinstance(item, dict)]


def events_of(got: list[Got]) -> list[dict]:
    """The CloudEvents in requests (single or batch)."""
    out = []
    for item in got:
        parsed = item.json
        out.extend(parsed if isinstance(parsed, list) else [parsed])
    return out
