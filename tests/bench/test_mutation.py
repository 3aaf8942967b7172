"""bench/mutation.py (scripts/mutate): what it hands mutmut, and how it scores."""

from __future__ import annotations

import tomllib

import pytest

from bench import mutation
from bench.mutation import GROUPS, ROOT, mutmut_config, score


@pytest.mark.parametrize("name", GROUPS)
def test_each_group_names_modules_and_tests_that_exist(name):
    group = GROUPS[name]
    assert group.modules and group.tests
    for path in (*group.modules, *group.tests):
        assert (ROOT / path).exists(), f"{name}: {path} moved? update bench/mutation.py"


@pytest.mark.parametrize("name", GROUPS)
def test_the_config_mutates_the_group_against_its_tests(name):
    pyproject = (ROOT / "pyproject.toml").read_text() + "\n" + mutmut_config(GROUPS[name])
    config = tomllib.loads(pyproject)["tool"]["mutmut"]
    assert config["only_mutate"] == list(GROUPS[name].modules)
    assert config["pytest_add_cli_args_test_selection"] == list(GROUPS[name].tests)
    assert config["source_paths"] == ["tally/"]


def test_timeouts_count_as_killed_and_mutants_not_run_count_not_at_all():
    found = {
        "a": "killed",
        "b": "timeout",
        "c": "survived",
        "d": "no tests",
        "e": "skipped",
        "f": "not checked",
    }
    assert score(found) == (2, 4)


def test_the_statuses_are_read_from_mutmuts_results(monkeypatch, tmp_path):
    output = "    tally.x.x_f__mutmut_1: survived\n    tally.x.x_f__mutmut_2: no tests\nnoise\n"
    monkeypatch.setattr(mutation, "mutmut", lambda folder, *args, **kw: output)
    assert mutation.statuses(tmp_path) == {
        "tally.x.x_f__mutmut_1": "survived",
        "tally.x.x_f__mutmut_2": "no tests",
    }
