"""Instructions per request on Tally's own path, counted by valgrind (callgrind): the same
count for the same code whatever else the machine is doing, so a change can be A/B'd to
a fraction of a percent on a VM whose seconds vary by 2× from one minute to the next.

    python bench/instructions.py                      # this tree vs HEAD~1
    python bench/instructions.py --ref a03ed45        # vs any revision (a worktree)
    python bench/instructions.py --tree /path/other   # vs another checkout
    python bench/instructions.py --only               # this tree alone
    python bench/instructions.py --writer 50          # the usage writer alone, per row
    python bench/instructions.py --floor              # this tree and the floor (bench/floor.py)

Each tree's app runs in one process under ``valgrind --tool=callgrind`` with the counting
off (``--instr-atstart=no``) and each thread counted apart: the shipped app
(``create_app`` with the access log, metrics, limits on the counter file as under gunicorn,
background usage writes: a worker whose writer process is away, so its writer thread
writes the rows itself) in front of bench/mock_upstream.py (not under valgrind), called
through Flask's test client. Every end user is sent one request, then
``callgrind_control -i on`` counts ``--requests`` calls and their rows' writing (the
writer flushed), and ``-i off``. The work a process does by the clock rather than per
call (the cache's one-second refresh, the counter file's sweep) is pinned off
(:func:`steady`): under valgrind it would come 50 times as often per call, and follow
the machine's load. The request thread's count is then the same run after run; the
usage writer thread's varies with its batches' sizes (how many calls came while it
lingered): bench/writer.py is its steadier measure. What is not counted:
gunicorn and gevent (the same for Tally and the floor), the upstream. What is: Flask,
Werkzeug, urllib3, SQLAlchemy and SQLite, and Tally's own work. Needs valgrind; each
tree takes a few minutes (the imports run about 50 times slower under valgrind).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.targets import ROOT, worktree  # noqa: E402


def main() -> None:
    """Count each tree in turn (both at once on two cores), print the table."""
    args = parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is missing: apt-get install -y valgrind")
    workdir = Path(tempfile.mkdtemp(prefix="tally-instructions-"))
    trees = {"this": ROOT}
    if args.floor:
        trees["floor"] = ROOT
    elif not args.only:
        trees[args.tree or args.ref] = Path(args.tree) if args.tree else worktree(args.ref, workdir)
    try:
        runs = {
            name: start(tree, args, workdir / f"{index}.out", floor=name == "floor")
            for index, (name, tree) in enumerate(trees.items())
        }
        counts = {name: finish(*run) for name, run in runs.items()}
        if args.keep:
            for path in workdir.glob("*.out-*"):
                shutil.copy(path, Path(args.keep) / path.name)
    finally:
        if not args.tree and not args.only and not args.floor:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(workdir / "base")],
                cwd=ROOT,
                capture_output=True,
            )
        shutil.rmtree(workdir, ignore_errors=True)
    if args.writer:
        print(
            f"\n# The usage writer: instructions per row ({args.requests} rows, batches of ", end=""
        )
        print(
            f"{args.writer}, {args.users} end users)\n\n| tree | per row | / this |\n|---|---|---|"
        )
        mine = counts["this"][0]
        for name, (thread, _others) in counts.items():
            print(f"| {name} | {thread / args.requests / 1e6:.3f} M | {thread / mine:.3f} |")
        return
    print(f"\n# Instructions per request ({args.requests} calls, {args.users} end users)\n")
    print("| tree | request thread, per request | / this | usage writer thread | / this |")
    print("|---|---|---|---|---|")
    mine, theirs = (count / args.requests for count in counts["this"])
    for name, (thread, writer) in counts.items():
        thread, writer = thread / args.requests, writer / args.requests
        print(
            f"| {name} | {thread / 1e6:.3f} M | {thread / mine:.3f} | {writer / 1e6:.3f} M "
            f"| {writer / theirs:.3f} |"
        )


def start(tree: Path, args, out: Path, floor: bool = False):
    """The tree's app (or the floor's) under callgrind, counting off, once it is warm."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--separate-threads=yes",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(ROOT / "bench/counted.py"),
        "--requests",
        str(args.requests),
        "--users",
        str(args.users),
        *(["--writer", str(args.writer)] if args.writer else []),
        *(["--floor"] if floor else []),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree), "TALLY_LOG_FORMAT": "json"}
    proc = subprocess.Popen(
        command,
        cwd=tree,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return proc, out


def finish(proc: subprocess.Popen, out: Path) -> tuple[int, int]:
    """Count the timed calls of one started child: the instructions of its request thread
    (the same count run after run), and of its other threads (the usage writer's: its
    batches are as large as the calls that came while it lingered, which varies)."""
    for step in ("on", "off"):
        line = proc.stdout.readline()
        while line and not line.startswith(("ready", "done")):  # the access log, etc.
            line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"the child ended early (exit {proc.wait()})")
        subprocess.run(
            ["callgrind_control", "-i", step, str(proc.pid)], check=True, capture_output=True
        )
        proc.stdin.write("\n")
        proc.stdin.flush()
    proc.stdout.read()
    proc.wait()
    return thread_totals(out)


def thread_totals(out: Path) -> tuple[int, int]:
    """From callgrind's files of one run (``out-01``, ``out-02``, …: one per thread, the
    first the main thread's): the main thread's instructions, and the others' summed."""
    counts = {}
    for path in out.parent.glob(out.name + "-*"):
        for line in path.read_text().splitlines():
            if line.startswith("totals:"):
                counts[int(path.name.rsplit("-", 1)[1])] = int(line.split()[1])
    if 1 not in counts:
        raise SystemExit(f"no totals in {out}-01")
    return counts[1], sum(count for thread, count in counts.items() if thread != 1)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="instructions per request, by callgrind")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--ref", default="HEAD~1", help="a git revision (default HEAD~1)")
    where.add_argument("--tree", help="another checkout instead of a revision")
    where.add_argument("--only", action="store_true", help="this tree alone")
    where.add_argument("--floor", action="store_true", help="this tree and the floor")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--keep", help="a folder to copy callgrind's files to (callgrind_annotate)")
    parser.add_argument(
        "--writer",
        type=int,
        metavar="BATCH",
        help="count the usage writer's record_calls alone, in batches of BATCH rows",
    )
    return parser.parse_args()


if __name__ == "__main__":
    main()
