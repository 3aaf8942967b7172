"""A mutation run on Tally's core with mutmut: each module against the tests that concern
it, then the score and every mutant that survived (docs/mutation.md). Not run in CI.

    scripts/mutate                    # every module below, a few minutes each
    scripts/mutate costs totals       # some of them
    scripts/mutate costs --again      # only last run's survivors (after adding tests)

Each group runs in its own folder, ``.mutation/<group>/`` (git ignores it): links to the
code and the tests, and a pyproject.toml whose ``[tool.mutmut]`` mutates the group's
modules and collects the group's tests only. mutmut then runs, for each mutant, just the
tests of that pool that called the mutated function.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
# what the tests need besides pyproject.toml (mutmut copies tests/ itself)
LINKED = ("tally", "tests", "blueprints", "templates", "static", "migrations")
LINKED_FILES = ("app.py", "wsgi.py", "alembic.ini")
KILLED = ("killed", "timeout", "caught by type check")
NOT_RUN = ("skipped", "not checked")


@dataclass(frozen=True)
class Group:
    """Modules mutated together, and the tests that concern them."""

    modules: tuple[str, ...]
    tests: tuple[str, ...]


GROUPS = {
    "tracking": Group(
        ("tally/tracking/config.py", "tally/tracking/identifiers.py", "tally/tracking/store.py"),
        (
            "tests/tracking/test_config.py",
            "tests/console/test_config.py",
            "tests/api/test_chat.py",
            "tests/api/test_errors.py",
            "tests/tracking/",
        ),
    ),
    "claims": Group(
        ("tally/end_users/claims.py",),
        (
            "tests/api/test_chat.py",
            "tests/api/test_errors.py",
            "tests/api/test_user_tokens.py",
            "tests/end_users/",
        ),
    ),
    "limits": Group(
        ("tally/limits/engine.py", "tally/limits/checks.py"),
        (
            "tests/api/test_limits.py",
            "tests/limits/test_memory.py",
            "tests/limits/test_lmdb.py",
            "tests/cli/test_limits.py",
            "tests/limits/",
        ),
    ),
    "costs": Group(
        ("tally/usage/costs.py",),
        ("tests/api/test_accounting.py", "tests/usage/test_reconcile.py", "tests/usage/"),
    ),
    "totals": Group(
        ("tally/usage/totals.py",),
        ("tests/usage/test_totals.py", "tests/usage/test_reconcile.py", "tests/usage/"),
    ),
}


def mutmut_config(group: Group) -> str:
    """The ``[tool.mutmut]`` section for ``group``."""
    lines = [
        "[tool.mutmut]",
        'source_paths = ["tally/"]',
        f"only_mutate = {list(group.modules)!r}",
        f"also_copy = {[*LINKED[2:], *LINKED_FILES]!r}",
        # a gunicorn test runs the app in another process, out of mutmut's sight
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-k", "not gunicorn"]',
        f"pytest_add_cli_args_test_selection = {list(group.tests)!r}",
    ]
    return "\n".join(lines).replace("'", '"') + "\n"


def prepare(name: str, group: Group, again: bool) -> Path:
    """The group's folder: links to the tree, and a pyproject.toml with its config. A new
    run starts from nothing; ``again`` keeps the last results but collects the tests'
    stats afresh (tests were added since)."""
    folder = WORK / name
    if not again:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in (*LINKED, *LINKED_FILES):
        link = folder / entry
        if not link.is_symlink():
            link.symlink_to(ROOT / entry)
    pyproject = (ROOT / "pyproject.toml").read_text()
    (folder / "pyproject.toml").write_text(pyproject + "\n" + mutmut_config(group))
    (folder / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    shutil.rmtree(folder / "mutants" / "tests", ignore_errors=True)
    return folder


def mutmut(folder: Path, *args: str, log: Path | None = None) -> str:
    """Run the mutmut next to this Python in ``folder``; its output (or into ``log``)."""
    command = [str(Path(sys.executable).with_name("mutmut")), *args]
    if log is None:
        return subprocess.run(command, cwd=folder, capture_output=True, text=True).stdout
    with log.open("a") as out:
        subprocess.run(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    return ""


def statuses(folder: Path) -> dict[str, str]:
    """Every mutant of the group's last run and what became of it."""
    found = {}
    for line in mutmut(folder, "results", "--all", "true").splitlines():
        match = re.fullmatch(r"\s+(\S+): (.+)", line)
        if match:
            found[match[1]] = match[2]
    return found


def score(found: dict[str, str]) -> tuple[int, int]:
    """(killed, tried): mutants the tests caught, of those that were run."""
    tried = [status for status in found.values() if status not in NOT_RUN]
    return sum(status in KILLED for status in tried), len(tried)


def run_group(name: str, group: Group, jobs: int, again: bool) -> dict[str, str]:
    """Mutate ``group``'s modules, run its tests against each mutant; the statuses."""
    folder = prepare(name, group, again)
    log = folder / "mutmut.log"
    print(f"{name}: {', '.join(group.modules)} (log: {log.relative_to(ROOT)})", flush=True)
    names = [m for m, status in statuses(folder).items() if status not in KILLED] if again else []
    mutmut(folder, "run", "--max-children", str(jobs), *names, log=log)
    return statuses(folder)


def report(results: dict[str, dict[str, str]]) -> None:
    """Print each group's score, the total, then every surviving mutant's diff."""
    print(f"\n{'group':10} {'mutants':>8} {'killed':>7} {'survived':>9} {'no tests':>9}", end="")
    print(f" {'score':>7}")
    all_killed = all_tried = 0
    for name, found in results.items():
        killed, tried = score(found)
        all_killed, all_tried = all_killed + killed, all_tried + tried
        survived = sum(status == "survived" for status in found.values())
        untested = sum(status == "no tests" for status in found.values())
        ratio = killed / tried if tried else 0.0
        print(f"{name:10} {tried:8} {killed:7} {survived:9} {untested:9} {ratio:7.1%}")
    if len(results) > 1 and all_tried:
        total = all_killed / all_tried
        print(f"{'all':10} {all_tried:8} {all_killed:7} {'':9} {'':9} {total:7.1%}")
    for name, found in results.items():
        for mutant, status in sorted(found.items()):
            if status not in KILLED and status not in NOT_RUN:
                print(f"\n--- {name}: {status}")
                print(mutmut(WORK / name, "show", mutant).rstrip())


def main(argv: list[str] | None = None) -> int:
    """Run the groups asked for (default: all) and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="*", metavar="group", help=", ".join(GROUPS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--again", action="store_true", help="rerun last run's survivors")
    args = parser.parse_args(argv)
    unknown = set(args.groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group {', '.join(sorted(unknown))}; groups: {', '.join(GROUPS)}")
    if not Path(sys.executable).with_name("mutmut").exists():
        print("mutmut is not installed: pip install -e '.[mutation]'", file=sys.stderr)
        return 2
    names = args.groups or list(GROUPS)
    results = {name: run_group(name, GROUPS[name], args.jobs, args.again) for name in names}
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
