"""The built-in demo upstream: an OpenAI-compatible endpoint that calls no model.

It is used only when ``TALLY_UPSTREAM_URL`` is unset, so a fresh install answers
without any account. It behaves like OpenRouter where that matters to Tally: SSE
comments while "thinking", usage with ``cost``, a generation id, and a usage-only
chunk when ``stream_options.include_usage`` is set. Its answers say plainly that they
come from the demo, and repeat the upstream identifier Tally attached, so a newcomer
can see the tracking at work.

Tally's upstream client reaches it in-process through :class:`DemoPool` (no loopback
hop, no worker waiting on another worker), whose answers are real urllib3 responses,
so the client's reading and streaming code is the production one; ``/demo/v1/...``
serves the same answers over HTTP for anyone who wants to call it directly.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from urllib3 import HTTPResponse

from tally.demo import chat, endpoints
from tally.demo.answers import json_answer
from tally.proxy.upstream import UpstreamClient

BASE_URL = "http://demo-upstream.tally.invalid/v1"
BASE_PATH = "/v1"
MODELS = ("tally/demo-echo", "tally/demo-mini")
CREATED = 1735689600


def respond(
    method: str, path: str, body: Any, token_delay: float = 0.03
) -> tuple[int, dict[str, str], Iterator[bytes]]:
    """Answer one demo request: status, headers and the body as an iterator of bytes."""
    if method == "GET" and path == "/models":
        data = [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "tally-demo"}
            for m in MODELS
        ]
        return json_answer(200, {"object": "list", "data": data})
    if method == "POST" and path == "/chat/completions":
        problem = chat.problem(body)
        if problem:
            return json_answer(
                400,
                {
                    "error": {
                        "message": problem,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
        return chat.respond(body, token_delay)
    if method == "POST" and path in ("/responses", "/embeddings"):
        return endpoints.respond(path, body, token_delay)
    return json_answer(
        404,
        {
            "error": {
                "message": f"The demo upstream has no {method} {path}.",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )


class DemoPool:
    """Stands in for urllib3's connection pool when no upstream is configured: answers
    from :func:`respond` with a real ``urllib3.HTTPResponse`` over the demo's pieces, so
    Tally's upstream client reads the demo exactly as it reads a real upstream."""

    def __init__(self, token_delay: float = 0.03):
        self.token_delay = token_delay

    def urlopen(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        preload_content: bool = True,
        decode_content: bool = True,
        **_: Any,
    ) -> HTTPResponse:
        """Answer one request; ``url`` is a path under :data:`BASE_URL`'s."""
        try:
            payload = json.loads(body) if body else None
        except (ValueError, RecursionError):  # not JSON, or nested past recursion
            payload = None
        path = url.removeprefix(BASE_PATH)
        status, headers, pieces = respond(method, path, payload, self.token_delay)
        return HTTPResponse(
            body=_Pieces(pieces),
            headers=headers,
            status=status,
            reason=HTTPStatus(status).phrase,
            preload_content=preload_content,
            decode_content=decode_content,
            request_method=method,
            request_url=BASE_URL.removesuffix(BASE_PATH) + url,
        )


class _Pieces(io.RawIOBase):
    """The demo's body as a file: ``read1`` hands over the next piece the moment the
    demo makes it (after its token delay), ``read`` all of them."""

    def __init__(self, pieces: Iterator[bytes]):
        self._pieces = pieces
        self._left = b""

    def readable(self) -> bool:
        """A body is read, never written."""
        return True

    def read1(self, size: int = -1) -> bytes:
        """The rest of the current piece, or the next one; b"" at the end."""
        data = self._left or next(self._pieces, b"")
        if 0 <= size < len(data):
            data, self._left = data[:size], data[size:]
        else:
            self._left = b""
        return data

    def readinto(self, buffer) -> int:
        """As :meth:`read1`, into ``buffer``."""
        data = self.read1(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        """Every piece left, joined."""
        data = self._left + b"".join(self._pieces)
        self._left = b""
        return data

    def close(self) -> None:
        """Stop the demo's generator (a client that went away mid-stream)."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
        super().close()


def demo_client(timeout: float, token_delay: float = 0.03) -> UpstreamClient:
    """An upstream client whose pool is the demo's (no ``TALLY_UPSTREAM_URL``): the
    production client's reading and streaming code, answered in-process."""
    return UpstreamClient(BASE_URL, None, timeout, pool=DemoPool(token_delay), is_demo=True)
