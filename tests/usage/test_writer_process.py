"""The usage writer process: what crosses its socket, and how gunicorn's workers get on
without it."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
import types
import typing
from datetime import datetime
from pathlib import Path

import pytest
import requests

from tally.end_users.claims import EndUserClaim
from tally.usage.call import CallRecord, Outcome
from tally.usage.writer import wire as writer_socket
from tally.usage.writer.wire import FRAME, decode_batch, encode_batch
from tests.helpers.rows import request_rows


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
    assert round_trip(items) == items


def test_what_orjson_refuses_crosses_the_socket_unchanged_too():
    """An upstream's usage may hold an integer past 64 bits or a lone surrogate (both
    valid JSON escapes to the standard library): such a frame is written by it instead."""
    call = CallRecord("r3", 1, EndUserClaim("u", "body"), "tally_1", 1, "m", False)
    for usage in ({"prompt_tokens": 2**70, "cost": 0.5}, {"note": "\ud800", "cost": 0.5}):
        items = [(call, Outcome(usage=usage), datetime(2026, 1, 2, 3, 4, 5))]
        decoded = round_trip(items)
        assert decoded == items and decoded[0][1].usage == usage


def test_a_frame_from_a_worker_missing_a_field_gives_that_field_its_default(monkeypatch):
    """Filled at once when every field came, built through __init__ otherwise."""
    items = [(CallRecord("r4", 1, None, None, 1, "m", True), Outcome(), datetime(2026, 1, 2))]
    frame = encode_batch(items)[FRAME.size :]
    data = json.loads(frame)
    del data[0][0]["endpoint"], data[0][0]["is_demo"]
    [(call, _outcome, _ended)] = decode_batch(json.dumps(data).encode())
    assert call.endpoint == "chat.completions" and call.is_demo is False and call.stream is True
    assert decode_batch(frame) == items


def round_trip(items: list) -> list:
    frame = encode_batch(items)
    (size,) = FRAME.unpack(frame[: FRAME.size])
    assert size == len(frame) - FRAME.size
    return decode_batch(frame[FRAME.size :])


def sample(hint, name: str):
    """A value of type ``hint`` that is no field's default, built from the type alone: a
    field added to CallRecord or Outcome is then covered with no change to this test."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return sample(next(a for a in typing.get_args(hint) if a is not type(None)), name)
    origin = typing.get_origin(hint) or hint
    if dataclasses.is_dataclass(origin):
        return filled(origin)
    samples = {
        str: f"{name}-ä",
        bool: True,
        int: 41 + len(name),
        float: 0.25 + len(name),
        dict: {name: [1, 2.5, "x", None], "nested": {"k": True}},
        list: [name, 3],
        tuple: (name, 3),
        datetime: datetime(2026, 11, 23, 16, 0, len(name), 123456),
    }
    if origin not in samples:
        raise TypeError(f"no sample for {name}: {hint!r}; add one above")
    return samples[origin]


def filled(cls):
    """An instance of ``cls`` with every field set to a value of its own."""
    hints = typing.get_type_hints(cls)
    instance = cls(**{f.name: sample(hints[f.name], f.name) for f in dataclasses.fields(cls)})
    for field in dataclasses.fields(cls):
        default = field.default_factory() if callable(field.default_factory) else field.default
        assert getattr(instance, field.name) != default, field.name
    return instance


def test_every_field_of_a_call_and_its_outcome_crosses_the_socket():
    items = [(filled(CallRecord), filled(Outcome), datetime(2026, 1, 2, 3, 4, 5, 6))]
    assert items[0][0].claim.profile  # the nested EndUserClaim, whole
    assert round_trip(items) == items


@dataclasses.dataclass(frozen=True)
class CallRecordWithMore(CallRecord):
    """CallRecord as another change may grow it."""

    endpoint: str = "chat.completions"
    cached_at: datetime | None = None
    tags: tuple[str, ...] = ()


@dataclasses.dataclass
class OutcomeWithMore(Outcome):
    """Outcome as another change may grow it."""

    cached_tokens: int | None = None
    cache: EndUserClaim | None = None


def test_a_field_added_to_the_dataclasses_crosses_with_no_codec_change(monkeypatch):
    monkeypatch.setattr(writer_socket, "CallRecord", CallRecordWithMore)
    monkeypatch.setattr(writer_socket, "Outcome", OutcomeWithMore)
    items = [(filled(CallRecordWithMore), filled(OutcomeWithMore), datetime(2026, 1, 2))]
    assert items[0][0].endpoint != "chat.completions" and items[0][1].cached_tokens
    assert round_trip(items) == items


def test_fields_unknown_to_the_reader_are_dropped_and_missing_ones_defaulted(monkeypatch):
    monkeypatch.setattr(writer_socket, "CallRecord", CallRecordWithMore)
    frame = encode_batch(
        [(CallRecord("r", None, None, None, None, "m", False), Outcome(), datetime(2026, 1, 2))]
    )
    [(call, _outcome, _ended)] = decode_batch(frame[FRAME.size :])
    assert (call.request_id, call.endpoint) == ("r", "chat.completions")
    monkeypatch.setattr(writer_socket, "CallRecord", CallRecord)
    frame = encode_batch([(filled(CallRecordWithMore), Outcome(), datetime(2026, 1, 2))])
    [(call, _outcome, _ended)] = decode_batch(frame[FRAME.size :])
    assert type(call) is CallRecord


def test_an_unreadable_frame_is_refused():
    with pytest.raises((ValueError, TypeError)):
        decode_batch(b'[[{"request_id": "r"}, {}, "2026-01-02T00:00:00"]]')


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
    [pid] = [p for p, cmd in processes_of(master).items() if "tally.runtime.writer" in cmd]
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


class RecordingWriter:
    """Stands in for the process's UsageWriter: keeps each batch it is asked to write."""

    def __init__(self, fail: bool = False):
        self.batches: list[list] = []
        self.fail = fail

    def write(self, calls) -> None:
        if self.fail:
            raise RuntimeError("a bug while writing")
        self.batches.append(list(calls))


def test_frames_of_several_workers_go_in_one_transaction_each_acknowledged_after_it():
    from concurrent.futures import ThreadPoolExecutor

    from tally.usage.writer.process import Batcher

    writer = RecordingWriter()
    batcher = Batcher(writer, linger=0.3)
    frames = [[("worker-1", 1), ("worker-1", 2)], [("worker-2", 1)], [("worker-3", 1)]]
    try:
        with ThreadPoolExecutor(3) as pool:  # three connections' frames at once
            acknowledged = list(pool.map(batcher.write, frames))
        assert acknowledged == [True, True, True]
        [batch] = writer.batches  # one write for the three frames
        assert sorted(batch) == sorted(item for frame in frames for item in frame)
        assert batcher.write([("worker-1", 3)]) is True  # the next frame: a batch of its own
        assert writer.batches[1] == [("worker-1", 3)]
    finally:
        batcher.close()


def test_a_frame_whose_batch_could_not_be_written_is_not_acknowledged():
    from tally.usage.writer.process import Batcher

    batcher = Batcher(RecordingWriter(fail=True), linger=0.0)
    try:
        assert batcher.write([("worker-1", 1)]) is False  # no ACK: the worker writes it
    finally:
        batcher.close()
