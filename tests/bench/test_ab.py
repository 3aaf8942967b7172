"""bench/ab.py's table (each Tally's ratio to the floor round by round, then the median)
and bench/writer.py's table, as a reviewer reads them."""

from __future__ import annotations

import argparse
import sys

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
    from bench import writer

    url = f"sqlite:///{tmp_path}/w.db"
    argv = ["writer.py", "--database-url", url, "--rows", "6", "--sizes", "1", "3"]
    monkeypatch.setattr(sys, "argv", argv)
    writer.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["| rows per batch | CPU µs per row |", "|---|---|"]
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 1", "| 3"]
    assert all(float(line.split(" | ")[1].rstrip(" |")) > 0 for line in lines[2:])
