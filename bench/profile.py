"""Where a Tally's CPU goes under load, against the floor's: py-spy samples every process
(gunicorn's master, its workers, the usage writer process) while wrk runs, and the self
time is summed per library and per function, in µs per request.

    python bench/profile.py [--seconds 12] [--rate 200] [--top 40] [--floor]

Needs ``py-spy`` (pip install py-spy) and wrk. Sampling has its own cost (the rate) and
is noisy; use it to find where to look, and bench/ab.py to say what a change gave.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loads import every_user, wrk  # noqa: E402
from bench.targets import HOST, Floor, Tally, Target, mock_upstream, stop, wait_http  # noqa: E402

USERS = 5000
LIBRARIES = (
    "gevent",
    "gunicorn",
    "werkzeug",
    "flask",
    "urllib3",
    "http/client",
    "json",
    "sqlalchemy",
    "prometheus_client",
    "limits",
    "lmdb",
    "orjson",
    "logging",
    "tally/",
    "blueprints/",
    "socket",
    "ssl",
    "email",
    "threading",
    "queue",
)


def main() -> None:
    """Start the mock and the targets, sample each under wrk, print the tables."""
    args = parse_args()
    for tool in ("wrk", "py-spy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing")
    workdir = Path(tempfile.mkdtemp(prefix="tally-profile-"))
    mock = mock_upstream()
    os.environ["TALLY_BENCH_USERS"] = str(USERS)
    settings = argparse.Namespace(database_url=None)
    targets: list[Target] = [Tally("tally", mock.port, workdir, settings, None)]
    if args.floor:
        targets.insert(0, Floor("floor", mock.port, workdir, None))
    try:
        wait_http(f"http://{HOST}:{mock.port}/v1/models")
        for target in targets:
            target.start()
            if isinstance(target, Tally):
                every_user(target, USERS)
        for target in targets:
            samples, run = profile(target, args, workdir)
            report(target, samples, run, args)
    finally:
        for target in (*targets, mock):
            stop(target.proc)
        shutil.rmtree(workdir, ignore_errors=True)


def profile(target: Target, args, workdir: Path) -> tuple[Counter, dict]:
    """wrk on ``target`` while py-spy records each of its processes; the self samples per
    frame (``file:function``) over all processes, and wrk's result."""
    outputs, spies = [], []
    for pid in target.pids():
        out = workdir / f"{target.name}-{pid}.txt"
        command = ["py-spy", "record", "--pid", str(pid), "--rate", str(args.rate)]
        command += ["--duration", str(args.seconds), "--format", "raw", "--output", str(out)]
        command += ["--nonblocking"] + (["--gil"] if args.gil else [])
        spies.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        outputs.append(out)
    result: dict = {}
    before = {pid: cpu_of(pid) for pid in target.pids()}
    load = threading.Thread(target=lambda: result.update(wrk(target, 32, args.seconds)))
    load.start()
    load.join()
    result["processes"] = {
        pid: (cpu_of(pid) - spent, name_of(pid)) for pid, spent in before.items()
    }
    for spy in spies:
        spy.wait()
    samples: Counter = Counter()
    if args.keep:
        for out in outputs:
            if out.exists():
                shutil.copy(out, Path(args.keep) / out.name)
    for out in outputs:
        if out.exists():
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                frames = stack.split(";")
                samples[re.sub(r":\d+\)$", ")", frames[-1])] += int(count)
    return samples, result


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def name_of(pid: int) -> str:
    """A process's command line, shortened."""
    try:
        line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"
    return line[-60:]


def library(frame: str) -> str:
    """The library a frame's file belongs to, or the frame's file."""
    for name in LIBRARIES:
        if f"/{name}" in frame or f"({name}" in frame:
            return name.rstrip("/")
    match = re.search(r"\(([^)]*)\)", frame)
    return (match.group(1) if match else frame).split(":")[0].rsplit("/", 1)[-1]


def report(target: Target, samples: Counter, run: dict, args) -> None:
    """Self µs per request per library, then the top functions."""
    requests = run["rps"] * args.seconds
    per = 1e6 / args.rate / requests  # µs of one sample, per request
    total = sum(samples.values())
    print(f"\n# {target.name}: {run['rps']:.0f} req/s, {run['cpu_ms']:.3f} CPU ms/req, ", end="")
    print(f"{total * per:.0f} µs/req sampled ({args.rate} Hz, {args.seconds} s)")
    print("\n| process | CPU µs/req |\n|---|---|")
    for pid, (spent, name) in run["processes"].items():
        print(f"| {pid} {name} | {spent * 1e6 / run['requests']:.0f} |")
    libraries: Counter = Counter()
    for frame, count in samples.items():
        libraries[library(frame)] += count
    print("\n| library | µs/req | share |\n|---|---|---|")
    for name, count in libraries.most_common(args.top):
        print(f"| {name} | {count * per:.1f} | {count / total:.1%} |")
    print("\n| function | µs/req |\n|---|---|")
    for frame, count in samples.most_common(args.top):
        print(f"| {frame[:110]} | {count * per:.1f} |")


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="where a Tally's CPU goes under load")
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--floor", action="store_true", help="profile the floor too")
    parser.add_argument("--keep", help="a folder to copy py-spy's raw stacks to")
    parser.add_argument("--gil", action="store_true", help="only the GIL's holder (py-spy --gil)")
    return parser.parse_args()


if __name__ == "__main__":
    main()
