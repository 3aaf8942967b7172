"""What the usage writer costs per request row: CPU µs of ``record_calls`` per row, by
batch size, on a fresh database (SQLite by default).

    python bench/writer.py                                   # batches of 1, 35, 100, 300
    python bench/writer.py --rows 20000 --sizes 100          # longer: steadier numbers
    python bench/writer.py --database-url postgresql+psycopg://postgres@127.0.0.1/test
    python bench/writer.py --sinks 1                         # with a webhook sink's events

Each batch is 5,000 end users in turn (as bench/run.py's load), each call with its
identifier, usage and cost, so every statement of a batch runs (end users, identifiers,
request rows, their counts, the three totals tables). The time is this process's CPU
(for PostgreSQL: the client's side, psycopg included, not the server's), the row
building excluded; the last column is the lowest tenth of the batches' own times, per
row: what a batch costs when nothing else disturbs it, steadier on a busy machine. To
compare two trees, run it from each, in turn, a few times: one run on these VMs differs
from the next by up to 2×.
"""

from __future__ import annotations

import argparse
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


def batch(size: int, first: int) -> list:
    """``size`` finished calls of users ``first``… (5,000 in turn)."""
    calls = []
    for n in range(first, first + size):
        user = f"user-{n % USERS}"
        call = CallRecord(
            request_id=new_request_id(),
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
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='tally-writer-')}/w.db"
    engine = make_engine(url)
    schema.upgrade(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        for n in range(args.sinks):
            add_sink(session, "bench", f"hook{n}", "webhook", "https://x.example", "bench")
    print("| rows per batch | CPU µs per row | lowest decile of batches |\n|---|---|---|")
    first = 0
    for size in args.sizes:
        spent, rows, each = 0.0, 0, []
        for _ in range(max(3, args.rows // size)):
            calls = batch(size, first)
            first += size
            started = time.process_time()
            with sessions() as session:
                record_calls(session, calls)
            each.append(time.process_time() - started)
            spent += each[-1]
            rows += size
        low = sorted(each)[len(each) // 10] / size * 1e6  # what a batch costs undisturbed
        print(f"| {size} | {spent / rows * 1e6:.0f} | {low:.0f} |")
    engine.dispose()


if __name__ == "__main__":
    main()
