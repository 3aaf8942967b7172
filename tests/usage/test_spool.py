"""The usage spool and idempotent recording (issue 12): rows the database cannot take
are kept on disk in order and replayed once; a replayed row is never counted twice."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from tally.db import utcnow
from tally.end_users.claims import EndUserClaim
from tally.models import RequestLog, UpstreamIdentifier
from tally.usage.call import CallRecord, Outcome
from tally.usage.records import record_calls
from tally.usage.writer.background import UsageWriter
from tally.usage.writer.spool import Spool, read_segment


def item(request_id: str, user: str = "u-1"):
    """One finished call, as the writer queues it."""
    call = CallRecord(
        request_id=request_id,
        api_key_id=None,
        claim=EndUserClaim(user, "header"),
        identifier=f"tally_{user}",
        revision_id=1,
        model="m",
        stream=False,
    )
    return call, Outcome(usage={"total_tokens": 15, "cost": 0.001}), utcnow()


def counts(session) -> tuple[int, int]:
    """(request rows, sum of the identifiers' request_count)."""
    rows = session.scalar(select(func.count()).select_from(RequestLog))
    counted = session.scalar(select(func.sum(UpstreamIdentifier.request_count))) or 0
    return rows, counted


def test_a_replayed_batch_is_neither_inserted_nor_counted_twice(db):
    batch = [item("r1"), item("r2"), item("r3", "u-2")]
    assert record_calls(db, batch) == {"r1", "r2", "r3"}
    assert record_calls(db, batch[1:] + [item("r4")]) == {"r4"}
    assert counts(db) == (4, 4)
    [u1] = db.scalars(
        select(UpstreamIdentifier.request_count).where(UpstreamIdentifier.identifier == "tally_u-1")
    ).all()
    assert u1 == 3


def test_the_spool_keeps_batches_in_order_and_drains_them_once(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert spool.append([item("a"), item("b")]) and spool.append([item("c")])
    [segment] = tmp_path.glob("*.spool")
    assert [[c.request_id for c, _, _ in batch] for batch in read_segment(segment)] == [
        ["a", "b"],
        ["c"],
    ]
    written = []
    assert spool.drain(lambda items: written.extend(c.request_id for c, _, _ in items)) == 3
    assert written == ["a", "b", "c"]
    assert not spool.pending()


def test_a_failed_replay_keeps_the_segment_for_the_next_try(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([item("a")])

    def refuse(_items):
        raise OperationalError("INSERT", {}, ConnectionRefusedError())

    with pytest.raises(OperationalError):
        spool.drain(refuse)
    assert spool.pending()
    assert spool.drain(lambda items: None) == 1
    assert not spool.pending()


def test_a_full_spool_refuses_and_says_so(tmp_path, caplog):
    spool = Spool(tmp_path, max_bytes=1000)
    assert spool.append([item("a")])
    assert not spool.append([item(f"x{i}") for i in range(20)])
    assert "USAGE SPOOL FULL" in caplog.text


def test_a_live_process_segment_is_left_alone_a_dead_one_is_adopted(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout.readline().strip() == b"spooled"
    spool = Spool(tmp_path, max_bytes=1 << 20)
    written = []
    assert spool.drain(written.extend) == 0  # its process is alive: it replays it itself
    holder.stdin.close()
    assert holder.wait(10) == 0  # gone: its segment is anybody's
    assert spool.drain(written.extend) == 1
    assert [c.request_id for c, _, _ in written] == ["orphan"]


_HOLD = """
import sys
from tests.usage.test_spool import item
from tally.usage.writer.spool import Spool
spool = Spool(sys.argv[1], 1 << 20)
spool.append([item("orphan")])
print("spooled", flush=True)
sys.stdin.read()
"""


def test_the_writer_spools_when_the_database_is_down_and_replays_once_it_is_back(app, tmp_path):
    runtime = app.extensions["tally"]
    writer = UsageWriter(runtime.sessions, spool=Spool(tmp_path, 1 << 20))
    real = writer.write_strict

    def down(_calls):
        raise OperationalError("INSERT", {}, ConnectionRefusedError("refused"))

    writer.write_strict = down
    writer.write([item("r1"), item("r2")])
    writer.write([item("r3")])  # in an outage: straight to the spool
    assert writer.replayer.in_outage and writer.spool.pending()
    writer.write_strict = real
    writer.replayer.stop()
    assert writer.spool.drain(real) == 3
    writer.spool.append([item("r2")])  # a frame written twice (the writer died before its ACK)
    writer.spool.drain(real)
    with runtime.sessions() as session:
        assert counts(session) == (3, 3)


def test_spool_segments_are_private_to_the_instance(tmp_path):
    spool = Spool(tmp_path / "usage-spool", 1 << 20)
    spool.append([item("a")])
    [segment] = (tmp_path / "usage-spool").glob("*.spool")
    assert os.stat(segment).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "usage-spool").st_mode & 0o777 == 0o700
    with open(segment, "rb") as fh, pytest.raises(BlockingIOError):
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by its process


def test_spooled_and_lost_rows_are_counted_in_the_metrics(app, tmp_path):
    from prometheus_client import REGISTRY

    def value(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    runtime = app.extensions["tally"]
    writer = UsageWriter(runtime.sessions, spool=Spool(tmp_path, 1 << 20))

    def down(_calls):
        raise OperationalError("INSERT", {}, ConnectionRefusedError("refused"))

    writer.write_strict = down
    spooled = value("tally_usage_rows_spooled_total")
    lost = value("tally_usage_rows_lost_total")
    writer.write([item("m1"), item("m2")])
    assert value("tally_usage_rows_spooled_total") == spooled + 2
    writer.replayer.stop()
    writer.spool = Spool(tmp_path / "tiny", max_bytes=1)  # full: the next rows are lost
    writer.write([item("m3")])
    assert value("tally_usage_rows_lost_total") == lost + 1
    assert value("tally_usage_rows_spooled_total") == spooled + 2
