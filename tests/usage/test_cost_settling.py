"""settle_cost (tally/usage/costs.py): the cost and cost source each call's row, totals and
budget counters get, for the usages upstreams report (docs/mutation.md's survivors)."""

from __future__ import annotations

import logging

import pytest

from tally.usage.call import Outcome
from tally.usage.costs import Price, settle_cost

TABLE = {"m": Price(prompt=0.5, completion=2.0, cached=0.25)}


def settled(usage, *, prices=lambda: TABLE, **options) -> Outcome:
    """The outcome of a call with ``usage`` once its cost is settled."""
    outcome = Outcome(usage=usage)
    settle_cost(outcome, (None, "m"), prices, **options)
    return outcome


def unreadable():
    """A price table the database cannot give."""
    raise RuntimeError("database down")


def test_the_upstreams_cost_is_kept_and_the_table_not_read():
    outcome = settled({"prompt_tokens": 10, "cost": "0.25"}, prices=unreadable)
    assert (outcome.cost_source, outcome.usage) == (
        "upstream",
        {"prompt_tokens": 10, "cost": "0.25"},
    )


@pytest.mark.parametrize(
    ("usage", "cost"),
    [
        ({"completion_tokens": 200}, 200 * 2.0 / 1e6),  # no prompt count: none charged
        ({"prompt_tokens": 1000}, 1000 * 0.5 / 1e6),  # no completion count: none charged
        ({"prompt_tokens": 1000, "completion_tokens": 0, "cached_tokens": 400}, 400 / 1e6),
    ],
)
def test_a_call_is_priced_from_the_tokens_it_reports(usage, cost):
    outcome = settled(usage)  # not an estimate unless said
    assert outcome.cost_source == "price_table"
    assert outcome.usage == {**usage, "cost": cost}


def test_an_unreadable_price_table_leaves_the_cost_unknown(caplog):
    with caplog.at_level(logging.WARNING, "tally.usage.costs"):
        outcome = settled({"prompt_tokens": 10}, prices=unreadable)
    assert (outcome.cost_source, outcome.usage) == (None, {"prompt_tokens": 10})
    assert [r.getMessage() for r in caplog.records] == [
        "price table unavailable; a call is left without a cost"
    ]
