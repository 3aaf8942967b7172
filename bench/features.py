"""What each feature on the request path costs under gunicorn: Tally as shipped, and Tally
with one feature switched off at a time, beside the floor, in one interleaved run.

    python bench/features.py                 # 6 rounds of 5 s: ~5 min
    python bench/features.py --rounds 10 --off limits rows

bench/steps.py times each step in one process, with no gunicorn, no gevent and no
usage writer process; this measures what a feature costs where it runs, CPU of every
process included (the usage writer process's, and what its work takes from the
workers on a machine whose cores it shares). Each target is its own gunicorn with the
shipped gunicorn.conf.py and a fresh SQLite database; a switched-off one runs
:func:`tally_without` (gunicorn's app factory) instead of ``wsgi:app``, which turns off
in its workers:

- ``limits``: no admission and no settling (the default message quota is not checked,
  no X-RateLimit-* headers);
- ``rows``: calls still counted in the metrics, their rows dropped where the worker
  hands them to the usage writer process (which then writes nothing);
- ``metrics``: rows written, nothing counted;
- ``log``: no access log line.

These Tallies are for measuring, never for serving. Each round runs wrk with 32
clients (5,000 end users in turn, each sent one request first) on every target in an
order reversed every other round. The table has the median over the rounds of each
target's CPU per request divided by the floor's in that round (as bench/ab.py), split
into gunicorn's workers and the usage writer process, and what switching the feature
off saved: the shipped Tally's ratio minus that target's, in floors (one floor: the
floor's CPU per request). These VMs differ by up to 2× from one minute to the next: a
difference under 0.05 floor is noise; take more rounds before trusting one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loads import every_user, wrk  # noqa: E402
from bench.profile import cpu_of  # noqa: E402
from bench.targets import HOST, Floor, Tally, Target, mock_upstream, stop, wait_http  # noqa: E402

USERS = 5000
FEATURES = ("limits", "rows", "metrics", "log")


def tally_without(feature: str):
    """gunicorn's app factory: the shipped app with ``feature`` switched off in this
    worker (see the module)."""
    if feature == "limits":
        from tally.proxy import call, pipeline

        pipeline.admit = lambda *args, **kwargs: None
        call.count_usage = lambda *args, **kwargs: None
    elif feature == "rows":
        from tally.usage.writer.wire import RemoteSink

        RemoteSink.send = lambda self, items: True
    elif feature == "metrics":
        from tally.usage.writer import background

        background.count_calls = lambda calls: None
    elif feature == "log":
        from tally.access_log import AccessLog

        AccessLog.__call__ = lambda self, environ, start: self.wsgi_app(environ, start)
    else:
        raise ValueError(f"no feature {feature!r}: one of {', '.join(FEATURES)}")
    from wsgi import app

    return app


def main() -> None:
    """Start the mock, the floor and the Tallies; run the rounds; print the table."""
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    workdir = Path(tempfile.mkdtemp(prefix="tally-features-"))
    mock = mock_upstream()
    os.environ["TALLY_BENCH_USERS"] = str(USERS)
    settings = argparse.Namespace(database_url=None)
    floor = Floor("floor", mock.port, workdir, None)
    shipped = Tally("shipped", mock.port, workdir, settings, None)
    tallies = [shipped]
    for feature in args.off:
        app = f"bench.features:tally_without({feature!r})"
        tallies.append(Tally(f"{feature} off", mock.port, workdir, settings, None, app=app))
    targets: list[Target] = [floor, *tallies]
    runs: dict[str, list[dict]] = {target.name: [] for target in targets}
    try:
        wait_http(f"http://{HOST}:{mock.port}/v1/models")
        for target in targets:
            target.start()
        for tally in tallies:
            every_user(tally, USERS)
        for index in range(args.rounds):
            for target in targets if index % 2 == 0 else targets[::-1]:
                time.sleep(1)  # the usage writers idle: each run pays for its own rows
                runs[target.name].append(measure(target, args.seconds))
    finally:
        for target in (*targets, mock):
            stop(target.proc)
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(args, floor, tallies, runs)


def measure(target: Target, seconds: float) -> dict:
    """One wrk run, with the CPU per answer of the usage writer process apart."""
    pids = target.pids()
    writers = [pid for pid in pids if _is_writer(pid)]
    before = {pid: cpu_of(pid) for pid in writers}
    run = wrk(target, 32, seconds)
    spent = sum(cpu_of(pid) - before[pid] for pid in writers)
    run["writer_ms"] = spent * 1000 / run["requests"] if run["requests"] else float("nan")
    return run


def print_table(args, floor: Target, tallies: list[Target], runs) -> None:
    """Per target: CPU per request / the floor's (per round, median), split; the saving."""
    base = runs[floor.name]

    def ratio(name: str, key=lambda run: run["cpu_ms"]) -> float:
        return statistics.median(
            key(run) / f["cpu_ms"] for run, f in zip(runs[name], base, strict=True)
        )

    shipped = ratio(tallies[0].name)
    print(f"\n# What each feature costs: {args.rounds} rounds of {args.seconds} s, 32 clients")
    print(f"# the floor: {statistics.median(r['cpu_ms'] for r in base):.3f} CPU ms per request")
    print("\n| Tally | CPU / floor | workers | usage writer process | req/s / floor | saved |")
    print("|---|---|---|---|---|---|")
    for tally in tallies:
        mine = ratio(tally.name)
        writer = ratio(tally.name, lambda run: run["writer_ms"])
        workers = ratio(tally.name, lambda run: run["cpu_ms"] - run["writer_ms"])
        rps = statistics.median(
            run["rps"] / f["rps"] for run, f in zip(runs[tally.name], base, strict=True)
        )
        saved = "" if tally is tallies[0] else f"{shipped - mine:+.2f} floor"
        print(
            f"| {tally.name} | {mine:.2f}× | {workers:.2f}× | {writer:.2f}× | {rps:.2f}× "
            f"| {saved} |"
        )
    errors = sum(run["errors"] for tally in tallies for run in runs[tally.name])
    print(f"\nerrors, every target and round: {errors}")


def _is_writer(pid: int) -> bool:
    """The usage writer process: started with its socket's path (tally.usage.writer)."""
    try:
        return b"usage.sock" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="what each feature costs under gunicorn")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (default 6)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per run (default 5)")
    parser.add_argument(
        "--off", nargs="+", choices=FEATURES, default=list(FEATURES), help="default: each"
    )
    return parser.parse_args()


if __name__ == "__main__":
    main()
