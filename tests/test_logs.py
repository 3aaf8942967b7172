"""Tally's log lines as an operator reads them on stderr, in both formats: one line per
record whatever a client sends, and no secret in any of them."""

from __future__ import annotations

import json
import logging
import re

import pytest

from tally.keys.admin_tokens import create_admin_token
from tally.logs import configure_logging
from tests.helpers.settings import HASH_KEY, SECRET_KEY

UPSTREAM_KEY = "sk-up-very-secret"
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) \S+ ")
# PATH_INFO as the client sent it, percent-encoded: line breaks of every kind
FORGED_PATHS = {
    "/v1/models%0A2030-01-01 00:00:00,000 INFO tally.access GET / 200": "\n",
    "/login%0D%0A{}": "\r\n",
    "/v1/models%0D2030-01-01": "\r",
    "/v1/x%E2%80%A8y": "\u2028",
    "/v1/x%C2%85y": "\x85",
    "/v1/x%1B[31my": "\x1b",
}


@pytest.fixture
def stderr_lines(capfd):
    """The lines written to stderr so far (Tally's log handler writes there)."""
    yield lambda: capfd.readouterr().err.splitlines()
    configure_logging("json")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_log_line_is_one_line_whatever_the_client_sends(make_app, stderr_lines, fmt):
    app = make_app(TALLY_LOG_FORMAT=fmt)
    stderr_lines()
    client = app.test_client()
    for path in FORGED_PATHS:
        client.get(path).close()  # the access line is written once the body is closed
    lines = stderr_lines()
    assert len(lines) == len(FORGED_PATHS), lines
    for line, breaker in zip(lines, FORGED_PATHS.values(), strict=True):
        assert breaker not in line
        if fmt == "json":
            entry = json.loads(line)
            assert entry["logger"] == "tally.access"
            assert breaker in entry["path"] and entry["message"].startswith("GET /")
        else:
            assert TEXT_LINE.match(line), line
            assert " tally.access GET /" in line
    if fmt == "text":
        assert lines[0].endswith(
            " tally.access GET /v1/models\\n2030-01-01 00:00:00,000 INFO tally.access GET / 200 404"
        )
        assert lines[1].endswith(" tally.access GET /login\\r\\n{} 404")
        assert lines[3].endswith(" GET /v1/x\\u2028y 404")
        assert lines[5].endswith(" GET /v1/x\\x1b[31my 404")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_keys_tokens_and_secrets_never_reach_a_log_line(make_app, make_key, stderr_lines, fmt):
    app = make_app(TALLY_LOG_FORMAT=fmt, TALLY_UPSTREAM_API_KEY=UPSTREAM_KEY)
    api_key = make_key()
    with app.extensions["tally"].sessions() as session:
        _, admin_token = create_admin_token(session, "reports", "test")
    assert api_key.startswith("tly_") and admin_token.startswith("tadm_")
    stderr_lines()
    client = app.test_client()
    client.get(f"/v1/{api_key}").close()  # a key pasted into a path
    client.get(f"/admin/api/{admin_token}").close()
    log = logging.getLogger("tally.test")
    log.warning("upstream %s hmac %s session %s", UPSTREAM_KEY, HASH_KEY, SECRET_KEY)
    try:
        raise RuntimeError(f"token {admin_token}\nkey {api_key}\nupstream {UPSTREAM_KEY}")
    except RuntimeError:
        log.exception("failed with Authorization: Bearer %s", admin_token)
    lines = stderr_lines()
    assert len(lines) == 4, lines
    written = "\n".join(lines)
    for secret in (api_key, admin_token, UPSTREAM_KEY, HASH_KEY, SECRET_KEY):
        assert secret not in written
        assert secret[8:] not in written  # not even the tail of one
    if fmt == "json":
        entries = [json.loads(line) for line in lines]
        assert entries[0]["path"] == "/v1/tly_[redacted]"
        assert entries[1]["path"] == "/admin/api/tadm_[redacted]"
        assert entries[2]["message"] == "upstream [redacted] hmac [redacted] session [redacted]"
        assert entries[3]["message"] == "failed with Authorization: Bearer [redacted]"
        assert (
            "RuntimeError: token tadm_[redacted]\nkey tly_[redacted]\nupstream [redacted]"
            in (entries[3]["exc"])
        )
    else:
        assert all(TEXT_LINE.match(line) for line in lines), lines
        assert lines[0].endswith(" tally.access GET /v1/tly_[redacted] 404")
        assert lines[1].endswith(" tally.access GET /admin/api/tadm_[redacted] 404")
        assert lines[2].endswith(" upstream [redacted] hmac [redacted] session [redacted]")
        assert " failed with Authorization: Bearer [redacted]\\nTraceback (most recent" in lines[3]
        assert lines[3].endswith(
            "RuntimeError: token tadm_[redacted]\\nkey tly_[redacted]\\nupstream [redacted]"
        )


def test_the_access_line_written_directly_is_the_line_logging_would_write():
    """The access log skips ``logging``'s record for its one line per request: that line
    must be the very one the JSON formatter writes for the record it stands for."""
    from tally.logs import JsonFormatter, Redactor

    formatter = JsonFormatter(Redactor(["s3cret-value"]))
    fields = {
        "method": "PÖST\n\x85",
        "path": '/v1/x\u2028"\\s3cret-value/tly_abcdefghijkl',
        "status": 404,
        "duration_ms": 0.812,
        "request_id": "5f0c",
    }
    message = f"{fields['method']} {fields['path']} {fields['status']}"
    record = logging.getLogger("tally.access").makeRecord(
        "tally.access", logging.INFO, "", 0, message, (), None, extra=fields
    )
    line = formatter.line_of(record.created, "tally.access", message, fields)
    assert line == formatter.format(record)
    assert json.loads(line)["path"] == '/v1/x\u2028"\\[redacted]/tly_[redacted]'
    assert "\u2028" not in line and "\x85" not in line and "s3cret" not in line
    # encoded as json.dumps encodes it (the characters that end lines escaped after)
    reference = json.dumps(json.loads(line), ensure_ascii=False)
    assert line == reference.replace("\x85", "\\u0085").replace("\u2028", "\\u2028")
    without_id = {k: v for k, v in fields.items() if k != "request_id"}
    record = logging.getLogger("tally.access").makeRecord(
        "tally.access", logging.INFO, "", 0, message, (), None, extra=without_id
    )
    assert formatter.line_of(record.created, "tally.access", message, without_id) == (
        formatter.format(record)
    )


@pytest.mark.parametrize(
    "method", ["POST", "GET", "PÖST\n\x85", "s3cret-value", "tly_abcdefghijkl"]
)
@pytest.mark.parametrize("request_id", ["5f0c", None])
def test_the_access_line_written_out_is_the_line_logging_would_write(method, request_id):
    """``access_line`` writes the access log's line field by field (a standard method is
    not run through the redactor): it is the very line the JSON formatter writes for the
    record it stands for, whatever the method, the path and the request id."""
    from tally.logs import JsonFormatter, Redactor

    formatter = JsonFormatter(Redactor(["s3cret-value"]))
    path = '/v1/x\u2028"\\s3cret-value/tly_abcdefghijkl Bearer abc.def'
    fields = {"method": method, "path": path, "status": 429, "duration_ms": 12.5}
    if request_id:
        fields["request_id"] = request_id
    message = f"{method} {path} 429"
    record = logging.getLogger("tally.access").makeRecord(
        "tally.access", logging.INFO, "", 0, message, (), None, extra=fields
    )
    line = formatter.access_line(
        record.created, "tally.access", method, path, 429, 12.5, request_id
    )
    assert line == formatter.format(record)
    assert "s3cret" not in line and "abcdefghijkl" not in line


def test_an_operators_own_handler_still_gets_every_access_record(make_app, caplog):
    """With a handler besides Tally's own (here pytest's), the access log goes through
    ``logging`` as before: the direct line is only for Tally's handler alone."""
    app = make_app()
    with caplog.at_level(logging.INFO, logger="tally.access"):
        app.test_client().get("/v1/nowhere").close()
    [record] = [r for r in caplog.records if r.name == "tally.access"]
    assert record.getMessage() == "GET /v1/nowhere 404"
    assert record.path == "/v1/nowhere" and record.status == 404


def test_request_ids_are_32_hex_digits_and_sort_in_the_order_they_were_made(monkeypatch):
    """A request id leads with the millisecond it was made, so ids made later sort
    later (the request log's index on them grows at its end), and the rest is random."""
    from tally import logs

    now = [1_790_000_000_123_456_789]  # ns
    monkeypatch.setattr(logs.time, "time_ns", lambda: now[0])
    first = logs.new_request_id()
    same_ms = logs.new_request_id()
    now[0] += 1_000_000  # a millisecond later
    later = logs.new_request_id()
    for rid in (first, same_ms, later):
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert first[:12] == same_ms[:12] == f"{1_790_000_000_123:012x}"
    assert first != same_ms  # 80 random bits after the time
    assert later[:12] == f"{1_790_000_000_124:012x}" and later > max(first, same_ms)
