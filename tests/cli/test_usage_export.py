"""``usage export``: the breakdowns on stdout as CSV or JSON, exact; bad arguments exit 2."""

from __future__ import annotations

import json

import pytest

from tests.helpers.breakdowns import EXPECTED

RANGE = ["--from", "2026-02-27", "--to", "2026-04-02"]


def export(runner, *args):
    return runner.invoke(args=["usage", "export", *RANGE, *args])


def test_csv_by_user_is_exact(runner, workload):
    result = export(runner, "--group-by", "user")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "internal_id,display_name,requests,prompt_tokens,completion_tokens,cached_tokens,cost_usd\n"
        ",,1,0,0,0,0.000000\n"
        "ada,Ada L,3,301,62,60,0.350000\n"
        "bob,,2,60,15,0,0.060000\n"
        "cy,,1,30,0,0,0.003000\n"
    )


def test_csv_is_the_default_format(runner, workload):
    result = export(runner, "--group-by", "day", "--format", "csv")
    assert result.output == export(runner, "--group-by", "day").output
    assert result.output.splitlines()[1] == "2026-02-27,1,100,20,10,0.100000"


@pytest.mark.parametrize("group_by", sorted(EXPECTED))
def test_json_is_exact(runner, workload, group_by):
    result = export(runner, "--group-by", group_by, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"rows": EXPECTED[group_by]}


def test_json_by_tag_text(runner, workload):
    result = export(runner, "--group-by", "tag", "--format", "json")
    assert result.output.startswith(
        '{"rows": [{"tag": null, "requests": 2, "prompt_tokens": 30, "completion_tokens": 0, '
        '"cached_tokens": 0, "cost_usd": 0.003}, {"tag": "beta", '
    )
    assert result.output.endswith("]}\n")


def test_key_filter(runner, workload):
    result = export(runner, "--group-by", "model", "--key", "globex")
    assert result.output.splitlines()[1:] == ["m-b,2,51,7,0,0.050000"]


def test_an_empty_range_is_the_header_alone(runner, workload):
    result = runner.invoke(
        args=[
            "usage",
            "export",
            "--from",
            "2020-01-01",
            "--to",
            "2020-01-31",
            "--group-by",
            "model",
        ]
    )
    assert result.output == (
        "model,requests,prompt_tokens,completion_tokens,cached_tokens,cost_usd\n"
    )
    as_json = runner.invoke(
        args=["usage", "export", "--from", "2020-01-01", "--to", "2020-01-01"]
        + ["--group-by", "model", "--format", "json"]
    )
    assert as_json.output == '{"rows": []}\n'


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--from", "2026-1-1", "--to", "2026-01-31", "--group-by", "user"],
            "--from must be a date",
        ),
        (["--from", "2026-01-01", "--to", "soon", "--group-by", "user"], "--to must be a date"),
        (["--from", "2026-02-01", "--to", "2026-01-01", "--group-by", "user"], "on or before"),
        (
            ["--from", "2026-01-01", "--to", "2026-01-31", "--group-by", "planet"],
            "group_by must be one of user, model, endpoint, day, tag, key, metadata:KEY",
        ),
        (
            ["--from", "2026-01-01", "--to", "2026-01-31", "--group-by", "user", "--format", "xml"],
            "--format must be one of csv, json",
        ),
        (
            ["--from", "2026-01-01", "--to", "2026-01-31", "--group-by", "user", "--key", "nope"],
            "no API key is named 'nope'",
        ),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(runner, args, message):
    result = runner.invoke(args=["usage", "export", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_prune_is_still_there(runner):
    result = runner.invoke(args=["usage", "prune", "--older-than", "400"])
    assert result.exit_code == 0 and "Deleted 0 request rows" in result.output
