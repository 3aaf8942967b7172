"""A streamed export (``/usage.csv``, ``/usage.json``, one user's among them) gives its
database connection back as soon as the server closes the response, read to its end or
cut off by the client, and not at some later garbage collection: downloads beyond the
pool's size leave the console answering at once.

Over real HTTP: werkzeug's server closes the response as gunicorn does. The cyclic
garbage collector is off meanwhile, as it is between two of its runs, so a connection
that only a collection would give back stays out where the test sees it."""

from __future__ import annotations

import gc
import threading
import time

import pytest
import requests

from blueprints.console import usage
from tally.reports.breakdowns import columns
from tests.helpers.api import chat

SETTLE = 3.0  # seconds the server may take to close a response after its last byte


@pytest.fixture
def browser(tally, tally_admin) -> requests.Session:
    """An HTTP client holding the admin's console session, after calls by three users."""
    for user in ("ada", "bob", "cy"):
        assert chat(tally, user=user).status_code == 200
    cookie = tally_admin.client.get_cookie("session")
    http = requests.Session()
    http.cookies.set(cookie.key, cookie.value)
    return http


@pytest.fixture
def without_collector():
    """No cyclic garbage collection during the test."""
    gc.disable()
    yield
    gc.enable()


def connections_out(server) -> int:
    """The connections of the served app's pool that are in use."""
    return server.flask_app.extensions["tally"].engine.pool.checkedout()


def wait_for_connections(server, expected: int) -> int:
    """The connections in use once they are ``expected`` (or after SETTLE seconds)."""
    deadline = time.monotonic() + SETTLE
    while connections_out(server) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return connections_out(server)


def test_downloads_read_to_the_end_give_their_connections_back(tally, browser, without_collector):
    idle = connections_out(tally)
    exports = ["csv?group_by=user", "json?group_by=model", "csv?group_by=day&user=ada"]
    pool_size = tally.flask_app.extensions["tally"].engine.pool.size()
    for n in range(pool_size + 1):
        with browser.get(f"{tally.url}/usage.{exports[n % len(exports)]}", timeout=5) as got:
            assert got.status_code == 200 and got.content
        assert wait_for_connections(tally, idle) == idle, f"download {n + 1}"
    started = time.monotonic()
    page = browser.get(f"{tally.url}/usage", timeout=5)
    assert page.status_code == 200 and "Usage" in page.text
    assert time.monotonic() - started < 2


def test_a_download_cut_off_midway_gives_its_connection_back(
    tally, browser, without_collector, monkeypatch
):
    """The export holds after its first chunk (the rows' query has run) until the client
    has gone, then writes on until a write finds it gone."""
    first_sent, client_gone, ends = threading.Event(), threading.Event(), []
    real_chunks = usage.export_chunks

    def held_chunks(fmt, columns, rows):
        chunks = real_chunks(fmt, columns, rows)
        try:
            yield next(chunks)
            first_sent.set()
            client_gone.wait(SETTLE)
            for _ in range(1000):
                yield "x" * 65536
            yield from chunks
            ends.append("read to the end")
        except GeneratorExit:
            ends.append("closed by the server")
            raise

    monkeypatch.setattr(usage, "export_chunks", held_chunks)
    idle = connections_out(tally)
    got = browser.get(f"{tally.url}/usage.csv?group_by=user&user=ada", stream=True, timeout=5)
    header = columns("user")[0].encode()
    assert got.status_code == 200 and got.raw.read(len(header)) == header
    assert first_sent.wait(SETTLE) and connections_out(tally) == idle + 1
    got.close()
    client_gone.set()
    assert wait_for_connections(tally, idle) == idle
    assert ends == ["closed by the server"]
