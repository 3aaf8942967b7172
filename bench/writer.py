"""What the usage writer costs per request row: CPU µs of ``record_calls`` per row, by
batch size, on a fresh database (SQLite by default).

    python bench/writer.py                                   # batches of 1, 35, 100, 300
    python bench/writer.py --rows 20000 --sizes 100          # longer: steadier numbers
    python bench/writer.py --database-url postgresql+psycopg://postgres@127.0.0.1/test
    python bench/writer.py --sinks 1                         # with a webhook sink's events
    python bench/writer.py --log 100000 --sizes 50 --ids random ordered
                                        # a 100,000-row log first; random vs API ids

Each batch is 5,000 end users in turn (as bench/run.py's load), each call with its
identifier, usage and cost, so every statement of a batch runs (end users, identifiers,
request rows, their counts, the three totals tables). The time is this process's CPU
(for PostgreSQL: the client's side, psycopg included, not the server's), the row
building excluded; the last column is the lowest tenth of the batches' own times, per
row: what a batch costs when nothing else disturbs it, steadier on a busy machine. To
compare two trees, run it from each, in turn, a few times: one run on these VMs differs
from the next by up to 2×.

``--log N`` first writes N rows (in batches of 500, ids as the API makes them), not
measured: a request log of some size, whose indexes span many pages. ``--ids`` says how
the calls' request ids are made: ``ordered`` as the API makes them
(tally.logs.new_request_id), ``random`` as 32 random hex digits (as before issue 19's
change); with both, each size is measured with each, in turn, in one database.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tally import schema  # noqa: E402
from tally.db import make_engine, make_session_factory, utcnow  # noqa: E402
from tally.end_users.claims import EndUserClaim  # noqa: E402
from tally.logs import new_request_id  # noqa: E402
from tally.sinks.admin import add_sink  # noqa: E402
from tally.usage.call import CallRecord, Outcome  # noqa: E402
from tally.usage.records import record_calls  # noqa: E402

USERS = 5000


IDS = {"ordered": new_request_id, "random": lambda: secrets.token_hex(16)}


def batch(size: int, first: int, ids: str = "ordered") -> list:
    """``size`` finished calls of users ``first``… (5,000 in turn)."""
    new_id = IDS[ids]
    calls = []
    for n in range(first, first + size):
        user = f"user-{n % USERS}"
        call = CallRecord(
            request_id=new_id(),
            api_key_id=None,
            claim=EndUserClaim(external_id=user, source="body"),
            identifier=f"tally_{user}",
            revision_id=None,
            model="bench/mock",
            stream=False,
        )
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "cost": 1e-4}
        outcome = Outcome(usage=usage, model="bench/mock", latency_ms=1.2, cost_source="upstream")
        calls.append((call, outcome, utcnow()))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description="record_calls: CPU µs per row by batch size")
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--rows", type=int, default=3000, help="rows per batch size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 35, 100, 300])
    parser.add_argument("--sinks", type=int, default=0, help="webhook sinks to add first")
    parser.add_argument("--log", type=int, default=0, help="rows written before measuring")
    parser.add_argument("--ids", nargs="+", choices=sorted(IDS), default=["ordered"])
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='tally-writer-')}/w.db"
    engine = make_engine(url)
    schema.upgrade(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        for n in range(args.sinks):
            add_sink(session, "bench", f"hook{n}", "webhook", "https://x.example", "bench")
    first = 0
    for _ in range(args.log // 500):
        with sessions() as session:
            record_calls(session, batch(500, first))
        first += 500
    print("| rows per batch | request ids | CPU µs per row | lowest decile of batches |")
    print("|---|---|---|---|")
    for size in args.sizes:
        each: dict[str, list[float]] = {ids: [] for ids in args.ids}
        for n in range(max(3, args.rows // size) * len(args.ids)):
            ids = args.ids[n % len(args.ids)]  # in turn: both see the log grow alike
            calls = batch(size, first, ids)
            first += size
            started = time.process_time()
            with sessions() as session:
                record_calls(session, calls)
            each[ids].append(time.process_time() - started)
        for ids, times in each.items():
            low = sorted(times)[len(times) // 10] / size * 1e6  # a batch undisturbed
            print(f"| {size} | {ids} | {sum(times) / len(times) / size * 1e6:.0f} | {low:.0f} |")
    engine.dispose()


if __name__ == "__main__":
    main()
