"""bench/ab.py's table (each Tally's ratio to the floor round by round, then the median),
bench/writer.py's table, bench/instructions.py's per-thread counts and bench/profile.py's
libraries, as a reviewer reads them."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytest

from bench.ab import print_table
from bench.targets import Target


def run(cpu_ms: float, rps: float) -> dict:
    return {"cpu_ms": cpu_ms, "rps": rps, "errors": 0}


def test_the_ratios_are_taken_round_by_round_then_the_median(capsys):
    floor, this, base = Target("floor", 1), Target("this", 2), Target("HEAD~1", 3)
    runs = {  # the machine slows down in round 2: each round's ratio still holds
        "floor": [run(0.5, 2000), run(1.0, 1000), run(0.6, 1800)],
        "this": [run(0.9, 1200), run(1.8, 600), run(1.2, 1000)],
        "HEAD~1": [run(1.0, 1100), run(2.0, 550), run(1.5, 900)],
    }
    args = argparse.Namespace(tree=None, ref="HEAD~1", rounds=3, limits=None)
    print_table(args, floor, [this, base], runs)
    out = capsys.readouterr().out
    assert "| this | 1.200 | 1.80× | 1000 | 0.60× | 0 |" in out  # 1.8, 1.8, 2.0; 0.6, 0.6, 0.56
    assert "| HEAD~1 | 1.500 | 2.00× | 900 | 0.55× | 0 |" in out  # 2.0, 2.0, 2.5; .55, .55, .5
    assert "this / HEAD~1, CPU per request, median of the rounds: 0.900" in out


def test_the_writer_bench_prints_cpu_per_row_for_each_batch_size(capsys, monkeypatch, tmp_path):
    from sqlalchemy import create_engine, text

    from bench import writer

    url = f"sqlite:///{tmp_path}/w.db"
    argv = ["writer.py", "--database-url", url, "--rows", "6", "--sizes", "1", "3"]
    argv += ["--log", "1000", "--ids", "random", "ordered"]
    monkeypatch.setattr(sys, "argv", argv)
    writer.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "| rows per batch | request ids | CPU µs per row | lowest decile of batches |",
        "|---|---|---|---|",
    ]
    assert [tuple(line.split(" | ")[:2]) for line in lines[2:]] == [
        ("| 1", "random"),
        ("| 1", "ordered"),
        ("| 3", "random"),
        ("| 3", "ordered"),
    ]
    for line in lines[2:]:
        mean, low = (float(cell) for cell in line.strip("| ").split(" | ")[2:])
        assert 0 < low <= mean  # the lowest tenth of the batches, per row
    with create_engine(url).connect() as conn:
        ids = conn.execute(text("SELECT request_id FROM request_log ORDER BY id")).scalars().all()
    # the log written first, then each size's batches with each kind of id in turn
    assert len(ids) == 1000 + 6 * 2 + 3 * 2 * 3  # size 1: 6 batches of each; size 3: 3

    def made_now(request_id: str) -> bool:  # leads with this hour's milliseconds
        return abs(int(request_id[:12], 16) / 1000 - time.time()) < 3600

    def in_order(some: list[str]) -> bool:  # by their milliseconds (within one, random)
        return [i[:12] for i in some] == sorted(i[:12] for i in some)

    logged, measured = ids[:1000], ids[1000:1012]
    assert in_order(logged) and all(map(made_now, logged))  # as the API makes them
    assert in_order(measured[1::2]) and all(map(made_now, measured[1::2]))
    assert not any(map(made_now, measured[0::2]))  # random: 1 chance in 10^7 to lead so


def test_the_instruction_counts_are_read_per_thread(tmp_path):
    """bench/instructions.py: callgrind writes a file per thread (``-01`` the main one);
    the request thread is the main thread, the others (the usage writer) are summed."""
    from bench.instructions import thread_totals

    for thread, total in ((1, 3_000_000), (2, 700_000), (3, 50_000)):
        header = "version: 1\ncreator: callgrind-3.19.0\n"
        (tmp_path / f"0.out-{thread:02d}").write_text(f"{header}totals: {total}\n")
    (tmp_path / "1.out-01").write_text("totals: 9\n")  # another tree's run: not this one's
    assert thread_totals(tmp_path / "0.out") == (3_000_000, 750_000)
    with pytest.raises(SystemExit, match="no totals"):
        thread_totals(tmp_path / "2.out")


def test_the_profile_names_each_frame_by_its_library():
    from bench.profile import library

    assert library("SocketMixin.send (gevent/_socketcommon.py)") == "gevent"
    assert library("insert_new (tally/usage/bulk.py)") == "tally"
    assert library("_proxy (blueprints/api/v1.py)") == "blueprints"
    assert library("HTTPResponse.begin (http/client.py)") == "http/client"
    assert library("replace (dataclasses.py)") == "dataclasses.py"


def test_the_steps_bench_times_every_step_on_the_shipped_path(capsys):
    """bench/steps.py wraps each step where the request path looks it up: a step renamed
    or moved away must fail here, not print a table with its row at 0."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "bench/steps.py", "--requests", "30", "--users", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    rows = dict(
        line.strip("|").split("|")[:2]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and "µs" not in line and "---" not in line
    )
    steps = {name.strip(): float(value) for name, value in rows.items() if "*" not in name}
    for step in ("authentication", "identity", "tracking", "admission", "forwarding"):
        assert steps[step] > 0, (step, done.stdout)
    for step in ("relay", "recording", "logging"):
        assert steps[step] > 0, (step, done.stdout)
