"""A fast mock of an OpenAI-compatible upstream, for benchmarks only.

One asyncio process (uvloop when installed), HTTP/1.1 with keep-alive, no framework:
it must cost far less than what it measures. ``POST /v1/chat/completions`` answers a
fixed completion, or streams one when the body says ``"stream": true``;
``POST /v1/responses`` answers a fixed response object, or streams typed events
(``response.created`` … ``response.output_text.delta`` … ``response.completed``, no
``[DONE]``; bench/mock_responses.py); ``POST /v1/embeddings`` answers one embedding
(``--dims`` floats) per input. Every streamed content event, and the final one,
carries ``"sent_ns"`` (``time.time_ns()`` when it was written) so the
load generator can tell how long the gateway held it. Body fields ``bench_tokens`` and
``bench_delay`` (seconds between tokens) override the command-line defaults per request.

    python bench/mock_upstream.py --port 9100 --tokens 20 --delay 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mock_responses import RESPONSE, embeddings, response_stream  # noqa: E402

COMPLETION = json.dumps(
    {
        "id": "gen-bench-1",
        "object": "chat.completion",
        "created": 1735689600,
        "model": "bench/mock",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the mock upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18, "cost": 4e-05},
    },
    separators=(",", ":"),
).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "bench/mock", "object": "model"}]}).encode()


def _head(status: str, content_type: str, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "X-Generation-Id: gen-bench"]
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    lines.append(framing)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


_TOKEN = (
    'data: {"id":"gen-bench-2","object":"chat.completion.chunk","model":"bench/mock",'
    '"sent_ns":%d,"choices":[{"delta":{"content":"w%d "}}]}\n\n'
)


def _token(index: int, sent_ns: int) -> bytes:
    payload = (_TOKEN % (sent_ns, index)).encode()
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(data: dict) -> bytes:
    return _chunk(b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")


class Mock(asyncio.Protocol):
    """One client connection: parse requests as they come, answer in order."""

    def __init__(self, tokens: int, delay: float, dims: int = 1536):
        self.tokens, self.delay, self.dims = tokens, delay, dims
        self.buffer = b""
        self.transport = None
        self.busy = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def connection_lost(self, exc):
        self.transport = None

    def _next(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        method, path = head[0].split(" ")[:2]
        if method == "GET" and path.endswith("/models"):
            self.transport.write(_head("200 OK", "application/json", len(MODELS)) + MODELS)
        elif method == "POST" and path.endswith(("/chat/completions", "/responses")):
            request = json.loads(body) if body else {}
            chat = path.endswith("/chat/completions")
            if request.get("stream"):
                self.busy = True
                stream = self._stream if chat else self._response_stream
                asyncio.get_running_loop().create_task(stream(request))
                return
            answer = COMPLETION if chat else RESPONSE
            self.transport.write(_head("200 OK", "application/json", len(answer)) + answer)
        elif method == "POST" and path.endswith("/embeddings"):
            answer = embeddings(json.loads(body).get("input"), self.dims)
            self.transport.write(_head("200 OK", "application/json", len(answer)) + answer)
        else:
            self.transport.write(_head("404 Not Found", "application/json", 2) + b"{}")
        if self.buffer:
            self._next()

    async def _stream(self, request: dict) -> None:
        tokens = int(request.get("bench_tokens", self.tokens))
        delay = float(request.get("bench_delay", self.delay))
        usage = (request.get("stream_options") or {}).get("include_usage")
        base = {"id": "gen-bench-2", "object": "chat.completion.chunk", "model": "bench/mock"}
        write = self.transport.write
        write(_head("200 OK", "text/event-stream", None))
        for index in range(tokens):
            if self.transport is None:
                return
            write(_token(index, time.time_ns()))  # preformatted: the mock must cost little
            if delay:
                await asyncio.sleep(delay)
        if self.transport is None:
            return
        finish = {"delta": {}, "finish_reason": "stop"}
        write(_event({**base, "sent_ns": time.time_ns(), "choices": [finish]}))
        if usage:
            counts = {"prompt_tokens": 9, "completion_tokens": tokens, "total_tokens": 9 + tokens}
            write(_event({**base, "choices": [], "usage": {**counts, "cost": 1e-05}}))
        write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self._done()

    async def _response_stream(self, request: dict) -> None:
        tokens = int(request.get("bench_tokens", self.tokens))
        delay = float(request.get("bench_delay", self.delay))
        self.transport.write(_head("200 OK", "text/event-stream", None))
        for event, pause in response_stream(tokens):
            if self.transport is None:
                return
            self.transport.write(_chunk(event))
            if pause and delay:
                await asyncio.sleep(delay)
        if self.transport is None:
            return
        self.transport.write(b"0\r\n\r\n")
        self._done()

    def _done(self) -> None:
        """A stream has ended: read the requests that came meanwhile."""
        self.busy = False
        if self.buffer:
            self._next()


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--tokens", type=int, default=20, help="tokens per streamed answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--dims", type=int, default=1536, help="floats per embedding")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Mock(args.tokens, args.delay, args.dims), args.host, args.port, backlog=4096
        )
        print(f"mock upstream on http://{args.host}:{args.port}/v1", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
