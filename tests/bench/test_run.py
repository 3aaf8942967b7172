"""bench/run.py's line to hold (``--max-cpu-ratio``): the exit status a reviewer or CI
reads, from the table's CPU per request of each Tally over its floor's."""

from __future__ import annotations

from bench.run import hold_the_line
from bench.table import Table


def table(tally_ms: float, floor_ms: float) -> Table:
    runs = {
        name: {"thr": [{"cpu_ms": ms}]} for name, ms in (("tally", tally_ms), ("floor", floor_ms))
    }
    return Table([], [("tally", "floor")], runs, {})


def test_a_run_over_the_line_exits_1_and_says_by_how_much(capsys):
    assert hold_the_line(table(1.75, 0.73).cpu_ratios(), 1.6) == 1
    assert "tally: CPU per request 2.40× its floor's, over 1.60×" in capsys.readouterr().out


def test_a_run_within_the_line_exits_0(capsys):
    assert hold_the_line(table(1.0, 0.8).cpu_ratios(), 1.6) == 0
    assert "1.25× its floor's, within 1.60×" in capsys.readouterr().out


def test_the_ratio_to_the_floor_is_taken_round_by_round():
    """A machine twice as slow in round 2 moves both figures: each round's ratio holds,
    and their median is what the line is held to (not the ratio of the medians)."""
    runs = {
        "tally": {"thr": [{"cpu_ms": 0.6}, {"cpu_ms": 1.3}, {"cpu_ms": 0.65}]},
        "floor": {"thr": [{"cpu_ms": 0.4}, {"cpu_ms": 0.8}, {"cpu_ms": 0.5}]},
    }
    ratios = Table([], [("tally", "floor")], runs, {}).cpu_ratios()
    assert round(ratios["tally"], 4) == 1.5  # rounds: 1.5, 1.625, 1.3
    # the ratio of the medians would have said 0.65 / 0.5 = 1.3
