"""bench/features.py: what switching one feature off saved, in floors, taken round by
round; and the app factory it serves, with each feature really off."""

from __future__ import annotations

import argparse

import pytest

from bench.features import FEATURES, print_table, tally_without
from bench.targets import Target


def run(cpu_ms: float, writer_ms: float, rps: float) -> dict:
    return {"cpu_ms": cpu_ms, "writer_ms": writer_ms, "rps": rps, "errors": 0}


def test_the_saving_is_the_shipped_ratio_minus_the_switched_off_one(capsys):
    floor, shipped, off = Target("floor", 1), Target("shipped", 2), Target("rows off", 3)
    runs = {  # the machine is twice as slow in round 2: each round's ratios still hold
        "floor": [run(0.5, 0, 2000), run(1.0, 0, 1000), run(0.5, 0, 2000)],
        "shipped": [run(0.7, 0.1, 1400), run(1.4, 0.2, 700), run(0.75, 0.1, 1300)],
        "rows off": [run(0.6, 0.0, 1600), run(1.2, 0.0, 800), run(0.65, 0.0, 1500)],
    }
    args = argparse.Namespace(rounds=3, seconds=5)
    print_table(args, floor, [shipped, off], runs)
    out = capsys.readouterr().out
    # shipped: 1.4, 1.4, 1.5 -> 1.40; workers 1.2, 1.2, 1.3 -> 1.20; writer 0.2
    assert "| shipped | 1.40× | 1.20× | 0.20× | 0.70× |  |" in out
    assert "| rows off | 1.20× | 1.20× | 0.00× | 0.80× | +0.20 floor |" in out
    assert "errors, every target and round: 0" in out


@pytest.fixture
def restored(monkeypatch):
    """Whatever tally_without replaces is put back after the test."""
    from tally.access_log import AccessLog
    from tally.proxy import call, pipeline
    from tally.usage.writer import background
    from tally.usage.writer.wire import RemoteSink

    monkeypatch.setattr(pipeline, "admit", pipeline.admit)
    monkeypatch.setattr(call, "count_usage", call.count_usage)
    monkeypatch.setattr(RemoteSink, "send", RemoteSink.send)
    monkeypatch.setattr(background, "count_calls", background.count_calls)
    monkeypatch.setattr(AccessLog, "__call__", AccessLog.__call__)
    monkeypatch.setenv("TALLY_DATABASE_URL", "sqlite://")
    return monkeypatch


@pytest.mark.parametrize("feature", FEATURES)
def test_each_feature_is_switched_off_where_the_request_path_looks_it_up(restored, feature):
    """A rename on the request path must fail here, not leave the feature on unseen."""
    from tally.access_log import AccessLog
    from tally.proxy import call, pipeline
    from tally.usage.writer import background
    from tally.usage.writer.wire import RemoteSink

    before = {
        "limits": (pipeline.admit, call.count_usage),
        "rows": (RemoteSink.send,),
        "metrics": (background.count_calls,),
        "log": (AccessLog.__call__,),
    }
    app = tally_without(feature)
    assert callable(app)
    after = {
        "limits": (pipeline.admit, call.count_usage),
        "rows": (RemoteSink.send,),
        "metrics": (background.count_calls,),
        "log": (AccessLog.__call__,),
    }
    for name in FEATURES:
        changed = [a is not b for a, b in zip(before[name], after[name], strict=True)]
        assert all(changed) if name == feature else not any(changed), name
    with pytest.raises(ValueError, match="no feature 'traces'"):
        tally_without("traces")
