"""The upstream router client: Tally's only outbound HTTP on the request path.

One connection pool per process. Connection-level failures become
:class:`UpstreamError` (502) or :class:`UpstreamTimeout` (504), and so does a redirect
(3xx, never followed: 502); an upstream answer of any other status is handed back, as
an :class:`UpstreamResponse`, for the caller to relay.

The hot path calls urllib3's ``HTTPConnectionPool.urlopen`` itself instead of going
through ``requests.Session``: urllib3 is requests' own transport, and
``Session.request`` (settings merging, cookies, hooks, redirect logic Tally never uses)
costs more CPU per call than the rest of the gateway's own work (docs/benchmarks.md).
Only urllib3's public API is used (``urlopen(preload_content=False)``,
``HTTPResponse.read``, ``read1``, ``stream``, ``close``, ``release_conn``), and the
request is the one requests would send: its default headers (User-Agent and all),
certifi's CA bundle, no retries, no redirects, compressed answers decoded.

The built-in demo upstream (:mod:`tally.demo.upstream`) is handed in as a pool of its own
whose answers are real ``urllib3.HTTPResponse`` objects, so reading it runs this same code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit, urlunsplit

import certifi
import urllib3
from requests.utils import default_headers
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)

from tally.errors import UpstreamError, UpstreamTimeout

CONNECT_TIMEOUT = 10.0
# The client's headers that go on to the upstream as sent (PRODUCT.md, Chat API):
# OpenRouter's app attribution. No other client header does.
PASSED_ON = ("HTTP-Referer", "X-Title")
# What ``retries=False, redirect=False`` becomes inside urllib3, built once, not per call.
NO_RETRIES = urllib3.Retry(False, redirect=False)
# read1's ceiling for a body that is not chunked: larger than any SSE event.
READ_SIZE = 65536


class Pool(Protocol):
    """What the client needs of a connection pool: urllib3's ``urlopen``."""

    def urlopen(self, method: str, url: str, **kwargs: Any) -> urllib3.BaseHTTPResponse:
        """Send one request; return the answer with its body still unread."""


class UpstreamResponse:
    """One upstream answer: its status and headers, and its body to read or stream."""

    __slots__ = ("status", "headers", "_raw", "_body")

    def __init__(self, raw: urllib3.BaseHTTPResponse):
        self.status: int = raw.status
        # urllib3's HTTPHeaderDict: case-insensitive lookups
        self.headers: Mapping[str, str] = raw.headers
        self._raw = raw
        self._body: bytes | None = None

    def read(self) -> bytes:
        """The whole body (decoded when it came compressed); read once, then kept."""
        if self._body is None:
            try:
                self._body = self._raw.read()
            except (HTTPError, OSError) as exc:
                raise _broken(exc) from None
        return self._body

    def stream(self) -> Iterator[bytes]:
        """The body's pieces the moment each arrives: a chunk of a chunked body as soon as
        it is complete (urllib3's ``read_chunked``, which undoes the framing), otherwise
        whatever one buffered read returns. Nothing waits for a buffer to fill."""
        if self._body is not None:
            if self._body:
                yield self._body
            return
        raw = self._raw
        try:
            if "chunked" in raw.headers.get("Transfer-Encoding", "").lower():
                # Measured per piece, as cheap as the hand-written dechunker this replaced
                # (read1 goes through http.client's chunk reader and costs twice as much).
                # decode_content is spelled out: read_chunked does not decode on None.
                # Chunks that arrived together leave one by one (no public API tells what
                # is already buffered): same CPU per event, but a relay that fell behind
                # catches up with one write per event instead of one per read.
                yield from raw.stream(None, decode_content=True)
            else:
                while piece := raw.read1(READ_SIZE):
                    yield piece
        except (HTTPError, OSError) as exc:
            raise _broken(exc) from None

    def close(self) -> None:
        """Release the connection: back to the pool for the next call when the body was
        read to its end (urllib3 already put it back then), closed otherwise (what is
        left of the body is not worth reading), its pool slot kept either way."""
        self._raw.close()
        self._raw.release_conn()


class UpstreamClient:
    """Talks to the configured OpenAI-compatible upstream (or the pool it is given)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float,
        *,
        pool: Pool | None = None,
        pool_size: int = 256,
        is_demo: bool = False,
    ):
        """``pool``: a stand-in for urllib3's connection pool (the built-in demo's, see
        tally.demo.upstream.demo_client); by default a real pool to ``base_url``."""
        self.is_demo = is_demo
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        self._pool_timeout = urllib3.Timeout(connect=self.timeout[0], read=self.timeout[1])
        self._pool: Pool = pool if pool is not None else _upstream_pool(self.base_url, pool_size)
        self._base_path = (urllib3.util.parse_url(self.base_url).path or "").rstrip("/")
        # Built once: the headers requests would send, then ours (urllib3 only reads them).
        auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        json_post = {**default_headers(), "Content-Type": "application/json"}
        self._headers = {
            ("GET", False): {**default_headers(), **auth},
            ("POST", False): {**json_post, **auth},
            ("POST", True): {**json_post, "Accept": "text/event-stream", **auth},
        }

    def __repr__(self) -> str:  # the API key stays out of reprs and logs
        return f"UpstreamClient(base_url={self.base_url!r}, demo={self.is_demo})"

    def post(
        self,
        path: str,
        body: dict[str, Any],
        *,
        stream: bool,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        """POST ``body`` as JSON to ``path`` (e.g. ``/chat/completions``). With ``stream``
        the body is left for :meth:`UpstreamResponse.stream`; without, it is read here.
        ``headers``: the client's own that go along (:data:`PASSED_ON`), if any."""
        return self._send("POST", path, encode_body(body), stream, headers)

    def get(self, path: str) -> UpstreamResponse:
        """GET ``path`` (e.g. ``/models``), its body read."""
        return self._send("GET", path, None, False)

    def scrub(self, text: str) -> str:
        """Remove the upstream API key from text that came back from the upstream."""
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def _send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        stream: bool,
        extra: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        headers = self._headers[method, stream]
        if extra:  # never over Tally's own (the upstream key above all)
            headers = {**extra, **headers}
        try:
            raw = self._pool.urlopen(
                method,
                self._base_path + path,
                body=data,
                headers=headers,
                timeout=self._pool_timeout,
                retries=NO_RETRIES,
                redirect=False,
                preload_content=False,
                decode_content=True,
            )
        except (HTTPError, OSError) as exc:
            raise self._unreachable(exc) from None
        if 300 <= raw.status < 400:  # not followed: an answer that is not an answer
            location = raw.headers.get("Location")
            raw.close()
            raw.release_conn()
            raise self._redirected(raw.status, path, location)
        response = UpstreamResponse(raw)
        if not stream:
            try:
                response.read()
            finally:
                response.close()  # read to the end: the connection is back in the pool
        return response

    def _redirected(self, status: int, path: str, location: str | None) -> UpstreamError:
        """The error for a redirect, which Tally never follows (the upstream key would go
        along, and a POST may not be repeated): it names where the upstream pointed —
        scheme, host and path only, the upstream key scrubbed — so the operator can fix
        TALLY_UPSTREAM_URL."""
        where = "with no Location"
        if location:
            try:
                target = urlsplit(urljoin(self.base_url + path, location.strip()))
                host = target.hostname or ""
                if target.port is not None:
                    host = f"{host}:{target.port}"
            except ValueError:  # an unreadable host or port
                where = "to an unreadable Location"
            else:
                bare = urlunsplit((target.scheme, host, target.path, "", ""))
                where = "to " + self.scrub(bare)
        return UpstreamError(
            f"The upstream answered a redirect ({status}) {where[:300]}; Tally does not "
            "follow redirects: check TALLY_UPSTREAM_URL.",
            code="upstream_malformed",
        )

    def _unreachable(self, exc: BaseException) -> UpstreamError:
        """The error for a request that got no answer. urllib3 makes a refused connection
        (NewConnectionError) a ConnectTimeoutError: it is not a timeout."""
        if isinstance(exc, NewConnectionError):
            return UpstreamError("The upstream could not be reached (ConnectionError).")
        if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
            seconds = self.timeout[0] if isinstance(exc, ConnectTimeoutError) else self.timeout[1]
            return UpstreamTimeout(f"The upstream did not answer within {seconds:g} seconds.")
        name = "SSLError" if isinstance(exc, SSLError) else "ConnectionError"
        return UpstreamError(f"The upstream could not be reached ({name}).")


def encode_body(body: dict[str, Any]) -> bytes:
    """``body`` as compact UTF-8 JSON. Text Tally does not keep (message content, input,
    instructions) may hold lone surrogates, sent as JSON escapes such as ``"\\ud800"``:
    UTF-8 cannot carry them, so such a body goes as ASCII JSON, every one of them
    escaped again as it came in (the usual body does not pay for the second try)."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def _upstream_pool(base_url: str, size: int) -> urllib3.HTTPConnectionPool:
    """The upstream host's connection pool. No PoolManager: it parses the URL and looks
    the pool up on every call (a tenth of urllib3's time here)."""
    https = urllib3.util.parse_url(base_url).scheme == "https"
    tls = {"ca_certs": certifi.where(), "cert_reqs": "CERT_REQUIRED"} if https else {}
    return urllib3.connection_from_url(base_url, maxsize=size, block=False, **tls)


def _broken(exc: BaseException) -> UpstreamError:
    """The error for a body that stopped before its end."""
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return UpstreamTimeout("The upstream stopped sending before the answer was complete.")
    return UpstreamError(
        "The upstream connection broke before the answer was complete.",
        code="upstream_disconnected",
    )
