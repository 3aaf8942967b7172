"""``flask --app app dev …``: tools for trying Tally out (demo traffic)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from blueprints.cli.common import runtime, session_scope
from tally.demo.seed import seed_demo_traffic

group = AppGroup("dev", help="Tools for trying Tally out.")


@group.command("seed")
@click.option("--requests", "requests_", default=1000, type=click.IntRange(0, 5_000_000))
@click.option("--users", default=50, type=click.IntRange(1, 1_000_000))
@click.option("--days", default=30, type=click.IntRange(1, 365))
def dev_seed(requests_: int, users: int, days: int) -> None:
    """Fill the database with realistic demo traffic, marked as demo data."""
    hash_key = runtime().hash_key
    with session_scope() as session:
        made = seed_demo_traffic(session, hash_key, requests=requests_, users=users, days=days)
    click.echo(f"Seeded {made.requests} demo requests for {made.users} demo users.")
