"""The upstream client's stream reader, against a raw HTTP server that frames chunks
exactly as scripted: pieces arrive as they come, chunks that arrive together leave
together, the connection is reused, and broken bodies raise as requests would."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from tally.upstream import UpstreamClient, is_read_timeout

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


class RawServer:
    """Answers each request on one connection with the next script: a list of byte
    strings to send and float pauses between them; None closes the connection."""

    def __init__(self, *scripts):
        self.scripts = list(scripts)
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while self.scripts:
            conn, _ = self.sock.accept()
            self.connections += 1
            with conn:
                while self.scripts:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        data = conn.recv(65536)
                        if not data:
                            break
                        request += data
                    if not request:
                        break
                    head, _, body = request.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(body) < length:
                        body += conn.recv(65536)
                    script = self.scripts.pop(0)
                    for step in script:
                        if step is None:
                            conn.close()
                            break
                        if isinstance(step, float):
                            time.sleep(step)
                        else:
                            conn.sendall(step)
                    if None in script:
                        break


def stream(client):
    return client.post_chat({"model": "m", "messages": [], "stream": True}, stream=True)


def test_chunks_arriving_together_leave_together_and_the_connection_is_reused():
    server = RawServer(
        [HEAD + b"5\r\nhello\r\n6\r\n world\r\n", 0.2, b"3\r\nab", 0.2, b"c\r\n0\r\n"]
        + [0.1, b"\r\n"],
        [HEAD + b"2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n"],
    )
    client = UpstreamClient(server.url, None, 5)
    response = stream(client)
    pieces = list(response.iter_content(chunk_size=None))
    response.close()
    assert pieces == [b"hello world", b"abc"]
    response = stream(client)
    assert list(response.iter_content(chunk_size=None)) == [b"ok"]
    response.close()
    assert server.connections == 1


def test_a_body_cut_inside_a_chunk_is_a_chunked_encoding_error():
    server = RawServer([HEAD + b"5\r\nhello\r\n5\r\nwor", None])
    response = stream(UpstreamClient(server.url, None, 5))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(response.iter_content(chunk_size=None))
    response.close()


def test_an_upstream_silent_mid_stream_is_a_read_timeout():
    server = RawServer([HEAD + b"5\r\nhello\r\n", 1.5, b"0\r\n\r\n"])
    response = stream(UpstreamClient(server.url, None, 0.3))
    pieces = response.iter_content(chunk_size=None)
    assert next(pieces) == b"hello"
    with pytest.raises(requests.exceptions.ConnectionError) as failure:
        next(pieces)
    assert is_read_timeout(failure.value)
    response.close()
