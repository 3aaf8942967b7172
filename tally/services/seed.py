"""Demo traffic for trying the console and for benchmarks. Every row it writes is
marked ``is_demo`` so it can be told apart from (and deleted before) real traffic."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import insert
from sqlalchemy.orm import Session

from tally.db import utcnow
from tally.models import RequestLog
from tally.services.identities import upsert_end_user, upsert_identifier
from tally.services.tracking import active_config, derive_identifier

# model -> (dollars per prompt token, dollars per completion token)
MODELS = {
    "openai/gpt-4o-mini": (0.15e-6, 0.60e-6),
    "anthropic/claude-sonnet-4": (3e-6, 15e-6),
    "google/gemini-2.5-flash": (0.30e-6, 2.5e-6),
    "meta-llama/llama-3.3-70b-instruct": (0.13e-6, 0.40e-6),
}
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Radia", "Guido"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Perlman"]
PLANS = ["free", "pro", "team", "enterprise"]
ERRORS = [
    (429, "429", "Rate limit exceeded upstream"),
    (502, "upstream_error", "Provider error"),
    (499, "client_disconnected", "The client went away mid-stream."),
]
BATCH = 5000


@dataclass(frozen=True)
class Seeded:
    """How much demo data was written."""

    requests: int
    users: int


def seed_demo_traffic(
    session: Session,
    hash_key: bytes,
    *,
    requests: int,
    users: int,
    days: int = 30,
    seed: int = 7,
) -> Seeded:
    """Write ``users`` demo end users and ``requests`` demo request rows over ``days``."""
    rng = random.Random(seed)
    config = active_config(session)
    now = utcnow()
    user_rows = []
    for n in range(users):
        external_id = f"demo_user_{n:05d}"
        first, last = rng.choice(FIRST), rng.choice(LAST)
        plan = rng.choice(PLANS)
        profile = {
            "display_name": f"{first} {last}",
            "email": f"{first}.{last}.{n}@example.com".lower(),
            "metadata": [{"plan": plan}],
            "tags": ["demo", f"plan-{plan}"],
        }
        user_id = upsert_end_user(session, external_id, profile, now, is_demo=True)
        identifier = derive_identifier(config, external_id, hash_key)
        identifier_id = upsert_identifier(session, identifier, user_id, config.revision_id, now)
        user_rows.append((user_id, identifier_id))
    # A few heavy users and a long tail, as real products have.
    weights = [1 / (rank + 1) ** 1.1 for rank in range(users)]
    models = list(MODELS)
    batch = []
    for _ in range(requests):
        user_id, identifier_id = rng.choices(user_rows, weights)[0]
        batch.append(_request_row(rng, now, days, models, user_id, identifier_id))
        if len(batch) == BATCH:
            session.execute(insert(RequestLog), batch)
            batch = []
    if batch:
        session.execute(insert(RequestLog), batch)
    session.commit()
    return Seeded(requests=requests, users=users)


def _request_row(rng, now, days, models, user_id, identifier_id) -> dict:
    model = rng.choices(models, [5, 2, 3, 1])[0]
    prompt_price, completion_price = MODELS[model]
    stream = rng.random() < 0.7
    prompt = int(rng.lognormvariate(6.2, 0.9))
    completion = int(rng.lognormvariate(5.3, 0.8))
    latency = completion * rng.uniform(8, 25) + rng.uniform(150, 600)
    row = {
        "request_id": uuid.uuid4().hex,
        "created_at": now - timedelta(seconds=rng.uniform(0, days * 86400)),
        "user_id": user_id,
        "identifier_id": identifier_id,
        "endpoint": "chat.completions",
        "model": model,
        "stream": stream,
        "status": 200,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": round(prompt * prompt_price + completion * completion_price, 10),
        "latency_ms": round(latency, 1),
        "ttft_ms": round(rng.uniform(150, 900), 1) if stream else None,
        "generation_id": "gen-demo-" + uuid.uuid4().hex[:20],
        "is_demo": True,
    }
    if rng.random() < 0.03:
        status, code, message = rng.choice(ERRORS)
        row.update(status=status, error_code=code, error_message=message)
        if status != 499:
            row.update(prompt_tokens=None, completion_tokens=None, total_tokens=None, cost=None)
    return row
