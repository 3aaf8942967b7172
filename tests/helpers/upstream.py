"""A capturing fake upstream: a real HTTP server on a loopback port.

Tests script what it answers (``FakeUpstream.reply(...)``) and read what it received
(``FakeUpstream.requests``): the exact JSON body Tally sent, headers included. What it
answers is built with tests.helpers.payloads.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.helpers.loopback import LoopbackServer
from tests.helpers.payloads import Pause, completion, sse_event

MODELS = {
    "object": "list",
    "data": [{"id": "openai/gpt-4o-mini", "object": "model", "created": 1, "owned_by": "openai"}],
}


@dataclass
class Received:
    """One request as the upstream saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Script:
    """What to answer to one request.

    ``events``: SSE payloads (dicts become ``data: <json>``, bytes are sent raw), each
    sent after ``delay`` seconds; a ``threading.Event`` among them makes the upstream wait
    until the test sets it (so a test can prove a chunk arrived before the next was sent),
    a ``Pause`` makes it go quiet; ``hang``: sleep this long before answering;
    ``cut``: stop the stream abruptly after the events (no [DONE]).
    """

    status: int = 200
    json: Any = None
    events: list[Any] | None = None
    delay: float = 0.0
    hang: float = 0.0
    cut: bool = False
    done: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


class FakeUpstream:
    """Records requests and plays scripted answers, served at :attr:`url`
    (``http://127.0.0.1:<port>/api/v1``, as OpenRouter's base URL)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripts: deque[Script] = deque()
        self.model_scripts: deque[Script] = deque()
        self.closed_streams = 0
        self.server = LoopbackServer(self.wsgi)
        self.url = self.server.url + "/api/v1"

    def reply(self, **script) -> None:
        """Queue the answer to the next chat request."""
        self.scripts.append(Script(**script))

    def reply_models(self, **script) -> None:
        """Queue the answer to the next model-list request (the list itself when none)."""
        self.model_scripts.append(Script(**script))

    @property
    def last(self) -> Received:
        """The most recent request received."""
        return self.requests[-1]

    def close(self) -> None:
        """Stop serving."""
        self.server.close()

    def wsgi(self, environ, start_response):
        """Answer one request with the next script of its kind: the model list's, else the
        calls' (the list, or a completion, when none is queued). A subclass adds endpoints
        by answering before calling this."""
        request = Request(environ)
        raw = request.get_data()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        self.requests.append(Received(request.method, request.path, dict(request.headers), body))
        if request.path.endswith("/models"):
            script = self.model_scripts.popleft() if self.model_scripts else Script(json=MODELS)
        else:
            script = self.scripts.popleft() if self.scripts else Script(json=completion())
        if script.hang:
            time.sleep(script.hang)
        if script.raw is not None:
            response = Response(script.raw, script.status, headers=script.headers)
        elif script.events is not None:
            response = Response(
                self._stream(script),
                script.status,
                headers=script.headers,
                mimetype="text/event-stream",
            )
        else:
            response = Response(
                json.dumps(script.json),
                script.status,
                headers=script.headers,
                mimetype="application/json",
            )
        return response(environ, start_response)

    def _stream(self, script: Script):
        try:
            for item in script.events:
                if isinstance(item, threading.Event):
                    item.wait(10)
                    continue
                if isinstance(item, Pause):
                    time.sleep(item.seconds)
                    continue
                if script.delay:
                    time.sleep(script.delay)
                yield sse_event(item)
            if script.cut:
                raise ConnectionAbortedError("fake upstream cut the stream")
            if script.done:
                yield b"data: [DONE]\n\n"
        finally:
            self.closed_streams += 1
