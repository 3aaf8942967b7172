"""When the limit storage is unreachable: TALLY_RATELIMIT_FAIL=open serves (logged,
counted), closed answers 503 in OpenAI's shape. Redis is stopped mid-run by cutting a
loopback proxy in front of it (the machine's Redis keeps running)."""

from __future__ import annotations

import logging
import os
from urllib.parse import urlparse

import pytest

from tally.limits.storage.lmdb_file import LMDBStorage
from tests.helpers.api import chat
from tests.helpers.faults import TcpProxy
from tests.helpers.limits import forget_counters, forget_redis_counters, set_limits
from tests.helpers.rows import request_rows

REDIS_URL = os.environ.get("TALLY_TEST_REDIS_URL")


@pytest.fixture
def proxied(make_app, serve, upstream):
    """Factory: Tally whose limit storage is Redis behind a proxy the test can cut."""
    made = []

    def factory(fail: str):
        parsed = urlparse(REDIS_URL)
        proxy = TcpProxy("127.0.0.1", parsed.port or 6379)
        flask_app = make_app(
            TALLY_UPSTREAM_URL=upstream.url,
            TALLY_RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{proxy.port}{parsed.path or '/15'}",
            TALLY_RATELIMIT_FAIL=fail,
        )
        forget_counters(flask_app)
        server = serve(flask_app)
        server.flask_app, server.proxy = flask_app, proxy
        from tally.keys.api_keys import create_api_key

        with flask_app.extensions["tally"].sessions() as session:
            _, server.key = create_api_key(session, "web", "test")
        made.append(server)
        return server

    yield factory
    for server in made:
        server.proxy.cut()
    if made:
        forget_redis_counters(REDIS_URL)


needs_redis = pytest.mark.skipif(not REDIS_URL, reason="needs TALLY_TEST_REDIS_URL")


@needs_redis
def test_fail_open_serves_logs_once_and_counts(proxied, caplog):
    tally = proxied("open")
    set_limits(tally.flask_app, "tier:default", "messages=2")
    assert chat(tally, user="u-1").headers["X-RateLimit-Remaining"] == "1"
    tally.proxy.cut()
    with caplog.at_level(logging.ERROR, logger="tally.limits.admission"):
        statuses = [chat(tally, user="u-1").status_code for _ in range(4)]
    assert statuses == [200] * 4  # unchecked: served
    runtime = tally.flask_app.extensions["tally"].limits
    assert runtime.unavailable_count >= 4
    lines = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) == 1 and "failing open" in lines[0].getMessage()


@needs_redis
def test_fail_closed_answers_503(proxied):
    tally = proxied("closed")
    assert chat(tally, user="u-1").status_code == 200
    tally.proxy.cut()
    refused = chat(tally, user="u-1")
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == "limits_unavailable"
    assert "cannot be checked" in error["message"]


@pytest.mark.parametrize(("fail", "status"), [("open", 200), ("closed", 503)])
def test_a_counter_file_that_is_gone(make_app, serve, upstream, tmp_path, fail, status):
    """The default storage's file is gone (its directory removed): the same two behaviours."""
    flask_app = make_app(TALLY_UPSTREAM_URL=upstream.url, TALLY_RATELIMIT_FAIL=fail)
    runtime = flask_app.extensions["tally"].limits
    runtime.storage = LMDBStorage(f"tally+lmdb://{tmp_path}/gone/limits")
    server = serve(flask_app)
    from tally.keys.api_keys import create_api_key

    with flask_app.extensions["tally"].sessions() as session:
        _, server.key = create_api_key(session, "web", "test")
    assert chat(server, user="u-1").status_code == status
    assert runtime.unavailable_count == 1
    # a 503 of Tally's own is an outage, no refusal: no request row (the served call's)
    assert [row.status for row in request_rows(flask_app)] == ([200] if status == 200 else [])
