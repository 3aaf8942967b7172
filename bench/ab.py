"""A change against the commit before it: this checkout's Tally and another revision's, with
the floor between them, in one interleaved run of the throughput load only.

    python bench/ab.py                      # this tree vs HEAD~1, 5 rounds of 4 s: ~2 min
    python bench/ab.py --ref 0eea0ba        # vs any revision (checked out in a worktree)
    python bench/ab.py --tree /path/other   # vs another checkout
    python bench/ab.py --limits daily_tokens=1000000000 daily_budget=1000000

Each round runs wrk with 32 clients (5,000 end users in turn, as bench/run.py) on the floor,
then each Tally, in an order that rotates from round to round; every Tally was first sent
one request per end user (the steady state). The table has, per target, the median CPU ms
per request (every process: master, workers, the usage writer process), requests/s, and
the median over the rounds of each Tally's ratio to the floor *in that round*: on these
VMs one minute differs from the next by up to 2×, a round's runs are seconds apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loads import every_user, wrk  # noqa: E402
from bench.targets import (  # noqa: E402
    HOST,
    ROOT,
    Floor,
    Tally,
    Target,
    mock_upstream,
    stop,
    wait_http,
    worktree,
)

USERS = 5000


def main() -> None:
    """Start the mock, the floor and the Tallies; run the rounds; print the table."""
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    workdir = Path(tempfile.mkdtemp(prefix="tally-ab-"))
    other = Path(args.tree) if args.tree else worktree(args.ref, workdir)
    mock = mock_upstream()
    os.environ["TALLY_BENCH_USERS"] = str(USERS)
    settings = argparse.Namespace(database_url=None)
    floor = Floor("floor", mock.port, workdir, None)
    this = Tally("this", mock.port, workdir, settings, None)
    base = Tally(args.tree or args.ref, mock.port, workdir, settings, None, other)
    tallies = [this, base]
    runs: dict[str, list[dict]] = {t.name: [] for t in (floor, *tallies)}
    try:
        wait_http(f"http://{HOST}:{mock.port}/v1/models")
        for target in (floor, *tallies):
            target.start()
        for tally in tallies:
            if args.limits:
                tally.cli("limits", "set", "tier:default", *args.limits)
            every_user(tally, USERS)
        for index in range(args.rounds):
            order = [floor, *tallies]
            order = order[index % 3 :] + order[: index % 3]
            for target in order:
                time.sleep(1)  # the usage writers idle: each run pays for its own rows
                runs[target.name].append(wrk(target, 32, args.seconds))
    finally:
        for target in (floor, *tallies, mock):
            stop(target.proc)
        if not args.tree:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT)
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(args, floor, tallies, runs)


def print_table(args, floor: Target, tallies: list[Target], runs) -> None:
    """The medians, and each Tally's per-round ratio to the floor (median)."""
    print(f"\n# Tally A/B: this tree vs {args.tree or args.ref}, {args.rounds} rounds")
    if args.limits:
        print(f"# tier:default limits: {' '.join(args.limits)}")
    print("\n| target | CPU ms/req | / floor (per round) | req/s | / floor (per round) | errors |")
    print("|---|---|---|---|---|---|")
    base = runs[floor.name]
    for target in (floor, *tallies):
        mine = runs[target.name]
        cpu = statistics.median(r["cpu_ms"] for r in mine)
        rps = statistics.median(r["rps"] for r in mine)
        cpu_ratio = statistics.median(
            r["cpu_ms"] / f["cpu_ms"] for r, f in zip(mine, base, strict=True)
        )
        rps_ratio = statistics.median(r["rps"] / f["rps"] for r, f in zip(mine, base, strict=True))
        errors = sum(r["errors"] for r in mine)
        print(
            f"| {target.name} | {cpu:.3f} | {cpu_ratio:.2f}× | {rps:.0f} | {rps_ratio:.2f}× "
            f"| {errors} |"
        )
    this, other = (runs[t.name] for t in tallies)
    pair = statistics.median(a["cpu_ms"] / b["cpu_ms"] for a, b in zip(this, other, strict=True))
    print(f"\nthis / {tallies[1].name}, CPU per request, median of the rounds: {pair:.3f}")


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="this tree's Tally vs another revision's")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--ref", default="HEAD~1", help="a git revision (default HEAD~1)")
    where.add_argument("--tree", help="another checkout instead of a revision")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--seconds", type=int, default=4, help="seconds per run (default 4)")
    parser.add_argument(
        "--limits",
        nargs="+",
        metavar="FIELD=VALUE",
        help="tier:default limits for both Tallies, e.g. daily_tokens=1000000000",
    )
    return parser.parse_args()


if __name__ == "__main__":
    main()
