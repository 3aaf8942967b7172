"""pyproject.toml lets in only the releases of the libraries whose internals Tally leans
on that the code was checked against (each module keeps the range in one constant)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tally.limits.storage.redis_plans import LIMITS_CHECKED
from tally.reports.breakdown_users import SQLALCHEMY_CHECKED
from tally.runtime.serving import SUPPORTED

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"


def pinned(name: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """A dependency's ``>=`` and ``<`` bounds in pyproject.toml, as (major, minor)."""
    [pin] = [
        dep
        for dep in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
        if re.match(rf"{name}(\[|>|<|=|$)", dep)
    ]
    low = re.search(r">=(\d+)(?:\.(\d+))?", pin).groups()
    high = re.search(r"<(\d+)(?:\.(\d+))?", pin).groups()
    return tuple((int(major), int(minor or 0)) for major, minor in (low, high))


@pytest.mark.parametrize(
    ("name", "checked"),
    [("gunicorn", SUPPORTED), ("limits", LIMITS_CHECKED), ("sqlalchemy", SQLALCHEMY_CHECKED)],
)
def test_the_pinned_range_lies_in_the_checked_one(name, checked):
    low, high = pinned(name)
    assert checked[0] <= low and high == checked[1], f"pyproject.toml's {name} pin vs {checked}"
