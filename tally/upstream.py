"""The upstream router client: the only module that uses ``requests``.

One connection pool per process. Connection-level failures become
:class:`UpstreamError` (502) or :class:`UpstreamTimeout` (504); an upstream answer of
any status is handed back, as a :class:`requests.Response`, for the caller to relay.

Requests to a real upstream go straight to urllib3's pool and the answer is wrapped in a
``requests.Response`` by hand: ``Session.request`` (settings merging, cookies, hooks,
redirect logic Tally never uses) cost about 0.9 ms of CPU per call on the benchmark
machine, more than the rest of the gateway's work. The wrapped response reads, streams,
raises and closes exactly as one from ``Session.request`` (same headers on the wire,
same CA bundle, no retries, no redirects). The built-in demo upstream, a requests
adapter, keeps the Session.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH, default_headers, get_encoding_from_headers
from urllib3.exceptions import ReadTimeoutError

from tally.errors import UpstreamError, UpstreamTimeout

DEMO_BASE_URL = "http://demo-upstream.tally.invalid/v1"
CONNECT_TIMEOUT = 10.0
# What ``retries=False, redirect=False`` becomes inside urllib3, built once, not per call.
NO_RETRIES = urllib3.Retry(False, redirect=False)


class UpstreamClient:
    """Talks to the configured OpenAI-compatible upstream (or the built-in demo)."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        *,
        pool_size: int = 256,
        demo_token_delay: float = 0.03,
    ):
        self.is_demo = base_url is None
        self.base_url = DEMO_BASE_URL if base_url is None else base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        self._pool_timeout = urllib3.Timeout(connect=self.timeout[0], read=self.timeout[1])
        self._pool, self._base_path = None, ""
        if not self.is_demo:
            self._pool, self._base_path = _upstream_pool(self.base_url, pool_size)
        self._default_headers = dict(default_headers())  # what requests would send
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or netrc surprises from the environment
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if self.is_demo:
            from tally.demo import DemoAdapter

            self._session.mount(DEMO_BASE_URL, DemoAdapter(token_delay=demo_token_delay))

    def __repr__(self) -> str:  # the API key stays out of reprs and logs
        return f"UpstreamClient(base_url={self.base_url!r}, demo={self.is_demo})"

    def post_chat(self, body: dict[str, Any], *, stream: bool) -> requests.Response:
        """POST ``/chat/completions``; with ``stream`` the body is read as it arrives."""
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if stream:
            headers["Accept"] = "text/event-stream"
        return self._send("POST", "/chat/completions", data=data, headers=headers, stream=stream)

    def get_models(self) -> requests.Response:
        """GET ``/models``."""
        return self._send("GET", "/models", headers={}, stream=False)

    def scrub(self, text: str) -> str:
        """Remove the upstream API key from text that came back from the upstream."""
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def _send(self, method: str, path: str, *, headers: dict, stream: bool, data=None):
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if not self.is_demo:
            return self._send_pooled(method, path, headers, data, stream)
        try:
            return self._session.request(
                method,
                self.base_url + path,
                data=data,
                headers=headers,
                stream=stream,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            raise self._failure(exc) from None

    def _send_pooled(self, method: str, path: str, headers: dict, data, stream: bool):
        try:
            raw = self._pool.urlopen(
                method,
                self._base_path + path,
                body=data,
                headers={**self._default_headers, **headers},
                timeout=self._pool_timeout,
                retries=NO_RETRIES,
                redirect=False,
                preload_content=False,
                decode_content=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # urllib3 makes NewConnectionError (refused) a ConnectTimeoutError: not a timeout
            timed_out = isinstance(exc, urllib3.exceptions.TimeoutError)
            if timed_out and not isinstance(exc, urllib3.exceptions.NewConnectionError):
                raise UpstreamTimeout(
                    f"The upstream did not answer within {self.timeout[1]:g} seconds."
                ) from None
            raise UpstreamError(
                f"The upstream could not be reached ({_requests_name(exc)})."
            ) from None
        response = _wrap(raw, self.base_url + path)
        if not stream:
            try:
                response.content  # noqa: B018 - read now, as Session.request(stream=False) does
            except requests.RequestException as exc:
                response.close()
                raise self._failure(exc) from None
        return response

    def _failure(self, exc: requests.RequestException) -> UpstreamError:
        """The UpstreamError (502) or UpstreamTimeout (504) a requests error stands for."""
        if is_read_timeout(exc):
            return UpstreamTimeout(
                f"The upstream did not answer within {self.timeout[1]:g} seconds."
            )
        if isinstance(exc, requests.exceptions.ChunkedEncodingError):
            return UpstreamError(
                "The upstream connection broke before the answer was complete.",
                code="upstream_disconnected",
            )
        return UpstreamError(f"The upstream could not be reached ({type(exc).__name__}).")


def _upstream_pool(base_url: str, size: int) -> tuple[urllib3.HTTPConnectionPool, str]:
    """The upstream host's connection pool, and the base URL's path. No PoolManager: it
    parses the URL and looks the pool up on every call (a tenth of urllib3's time here)."""
    url = urllib3.util.parse_url(base_url)
    https = url.scheme == "https"
    tls = {"ca_certs": DEFAULT_CA_BUNDLE_PATH, "cert_reqs": "CERT_REQUIRED"} if https else {}
    pool = urllib3.connection_from_url(base_url, maxsize=size, block=False, **tls)
    return pool, (url.path or "").rstrip("/")


def _requests_name(exc: BaseException) -> str:
    """The name requests gives this urllib3 error, so messages stay as they were."""
    return "SSLError" if isinstance(exc, urllib3.exceptions.SSLError) else "ConnectionError"


class _Response(requests.Response):
    """A requests.Response whose ``iter_content(chunk_size=None)`` hands over each piece
    of the body the moment it arrives, with one buffered read per piece.

    requests' own generator goes through urllib3's ``read_chunked`` and three wrapper
    layers per chunk, and hands over one chunk per call; profiled with 300 concurrent
    streams, that was a third of the relay's CPU. Here one buffered read (``read1``)
    is taken per piece and chunked framing is undone by hand, so several chunks that
    arrived together leave together (see ``_dechunked``). Errors are
    raised as requests raises them (ChunkedEncodingError for a broken body,
    ConnectionError wrapping ReadTimeoutError for a timeout), so callers see no
    difference. Compressed bodies take requests' path, which decodes them.
    """

    def iter_content(self, chunk_size=1, decode_unicode=False):
        """As requests' iter_content; the fast path for ``chunk_size=None``."""
        plain = self.headers.get("Content-Encoding", "identity").lower() == "identity"
        source = getattr(self.raw, "_fp", None)
        if chunk_size is not None or decode_unicode or not plain or source is None:
            return super().iter_content(chunk_size, decode_unicode)
        if self._content_consumed:
            raise requests.exceptions.StreamConsumedError()
        return self._pieces(source)

    def _pieces(self, source):
        if source.chunked and getattr(source, "chunk_left", None) is None and source.fp:
            yield from self._dechunked(source)
            return
        while True:
            piece = self._read1(source.read1, 65536)
            if not piece:
                break
            yield piece
        source.close()  # the body is complete: the connection can serve the next call
        self._content_consumed = True

    def _dechunked(self, source):
        """Undo chunked framing ourselves: one buffered read may hold several chunks (a
        relay that fell behind), and they leave as one piece, so the caller relays them
        in one write instead of one per chunk."""
        buffer, pieces = b"", []
        while True:
            data = self._read1(source.fp.read1, 65536)
            if not data:
                error = urllib3.exceptions.ProtocolError(
                    "Connection broken: the stream ended inside a chunk",
                    http.client.IncompleteRead(buffer),
                )
                raise requests.exceptions.ChunkedEncodingError(error)
            buffer += data
            while True:
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    break
                try:
                    size = int(buffer[:line_end].split(b";", 1)[0], 16)
                except ValueError:
                    error = urllib3.exceptions.ProtocolError(
                        f"Connection broken: invalid chunk length {buffer[:line_end][:20]!r}"
                    )
                    raise requests.exceptions.ChunkedEncodingError(error) from None
                if size == 0:
                    if b"\r\n\r\n" not in buffer[line_end:]:
                        break  # the trailer is not all here yet
                    if pieces:
                        yield b"".join(pieces)
                    source.chunk_left, source.chunked = 0, False
                    source.close()  # the body is complete: the connection can be reused
                    self._content_consumed = True
                    return
                if len(buffer) < line_end + 2 + size + 2:
                    break  # the rest of this chunk is still on its way
                pieces.append(buffer[line_end + 2 : line_end + 2 + size])
                buffer = buffer[line_end + 2 + size + 2 :]
            if pieces:
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                pieces = []

    def _read1(self, read, size: int) -> bytes:
        try:
            return read(size)
        except TimeoutError as exc:
            error = ReadTimeoutError(None, self.url, f"Read timed out. ({exc})")
            raise requests.exceptions.ConnectionError(error) from None
        except (http.client.HTTPException, OSError) as exc:
            error = urllib3.exceptions.ProtocolError(f"Connection broken: {exc!r}", exc)
            raise requests.exceptions.ChunkedEncodingError(error) from None


def _wrap(raw: urllib3.BaseHTTPResponse, url: str) -> requests.Response:
    """A requests.Response around urllib3's, as requests' HTTPAdapter.build_response
    makes it (cookies aside: Tally keeps none)."""
    response = _Response()
    response.status_code = raw.status
    response.headers = CaseInsensitiveDict(raw.headers)
    response.encoding = get_encoding_from_headers(response.headers)
    response.raw = raw
    response.reason = raw.reason
    response.url = url
    return response


def is_read_timeout(exc: BaseException) -> bool:
    """True when a requests error (raised while reading a body) is a read timeout."""
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    return any(isinstance(arg, ReadTimeoutError) for arg in getattr(exc, "args", ()))


class UpstreamResponse:
    """An upstream answer as the pipeline reads it (status, headers, read, stream, close);
    errors while reading are Tally's own UpstreamError / UpstreamTimeout."""

    def __init__(self, response: requests.Response):
        self._response = response
        self.status = response.status_code
        self.headers = response.headers

    def read(self) -> bytes:
        """The whole body."""
        try:
            return self._response.content
        except requests.RequestException as exc:
            raise _broken(exc) from None

    def stream(self):
        """Body pieces as they arrive."""
        try:
            yield from self._response.iter_content(chunk_size=None)
        except requests.RequestException as exc:
            raise _broken(exc) from None

    def close(self) -> None:
        """Release the connection."""
        self._response.close()


def _broken(exc: requests.RequestException) -> UpstreamError:
    if is_read_timeout(exc):
        return UpstreamTimeout("The upstream stopped sending before the answer was complete.")
    return UpstreamError(
        "The upstream connection broke before the answer was complete.",
        code="upstream_disconnected",
    )


def _post(self, path: str, body: dict[str, Any], *, stream: bool) -> UpstreamResponse:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if stream:
        headers["Accept"] = "text/event-stream"
    return UpstreamResponse(self._send("POST", path, data=data, headers=headers, stream=stream))


def _get(self, path: str) -> UpstreamResponse:
    return UpstreamResponse(self._send("GET", path, headers={}, stream=False))


UpstreamClient.post = _post  # temporary: replaced by the urllib3-only client
UpstreamClient.get = _get
