"""The usage writer process: what crosses its socket, and how gunicorn's workers get on
without it."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path

import requests

from tally.identity import EndUserClaim
from tally.services.usage import CallRecord, Outcome
from tally.services.writer_process import FRAME, decode_batch, encode_batch
from tests.support import request_rows


def test_a_batch_crosses_the_socket_unchanged():
    items = [
        (
            CallRecord(
                request_id="r1",
                api_key_id=3,
                claim=EndUserClaim("user-ä", "identity", {"display_name": "Ada", "tags": ["x"]}),
                identifier="tally_3f1c",
                revision_id=2,
                model="openai/gpt-4o",
                stream=True,
                is_demo=False,
            ),
            Outcome(
                status=499,
                error_code="client_disconnected",
                error_message="The client went away mid-stream.",
                usage={"prompt_tokens": 9, "completion_tokens": 3, "cost": 1.5e-05},
                generation_id="gen-1",
                model="openai/gpt-4o-2024",
                latency_ms=812.5,
                ttft_ms=95.25,
            ),
            datetime(2026, 11, 23, 16, 0, 0, 123456),
        ),
        (
            CallRecord("r2", None, None, None, 1, "m", False, True),
            Outcome(),
            datetime(2026, 11, 23, 16, 0, 1),
        ),
    ]
    frame = encode_batch(items)
    (size,) = FRAME.unpack(frame[: FRAME.size])
    assert size == len(frame) - FRAME.size
    assert decode_batch(frame[FRAME.size :]) == items


def processes_of(parent: int) -> dict[int, str]:
    """The children of ``parent``: pid -> command line."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
                found[int(stat.parent.name)] = cmdline.decode()
        except (OSError, ValueError):
            continue
    return found


def writer_pid(master: int) -> int:
    [pid] = [p for p, cmd in processes_of(master).items() if "writer_process" in cmd]
    return pid


def chat(server, key: str, user: str):
    response = requests.post(
        server.url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}", "X-Tally-User": user},
        timeout=10,
    )
    assert response.status_code == 200


def wait_for_rows(app, count: int) -> list:
    deadline = time.monotonic() + 15
    while len(rows := request_rows(app)) < count:
        assert time.monotonic() < deadline, f"{len(rows)} rows of {count}"
        time.sleep(0.05)
    return rows


def test_workers_write_their_own_rows_when_the_writer_process_is_gone(
    gunicorn,
    upstream,
    app,
    make_key,
):
    key = make_key()
    chat(gunicorn, key, "before")
    wait_for_rows(app, 1)
    os.kill(writer_pid(gunicorn.pid), signal.SIGKILL)
    for index in range(5):
        chat(gunicorn, key, f"after-{index}")
    rows = wait_for_rows(app, 6)
    assert sorted(row.user.external_id for row in rows) == [
        "after-0",
        "after-1",
        "after-2",
        "after-3",
        "after-4",
        "before",
    ]


def test_the_writer_process_does_not_outlive_a_killed_master(gunicorn):
    writer = writer_pid(gunicorn.pid)
    gunicorn.kill()
    gunicorn.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{writer}").exists():
        state = Path(f"/proc/{writer}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break  # exited; only its entry waits for a parent to read it
        assert time.monotonic() < deadline, "the usage writer process is still running"
        time.sleep(0.1)
