"""Console sign-in under the shipped gunicorn (2 workers, one trusted proxy): failures
from one address lock that address and the account out for strangers, on whichever
worker they land, while the owner's browser (its device cookie) still signs in."""

from __future__ import annotations

import os
import re

import pytest
import requests

from tally.operators.accounts import create_operator
from tests.helpers.console import PASSWORD
from tests.helpers.gunicorn import start_gunicorn, stop, tally_env
from tests.helpers.limits import forget_redis_counters

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
ADMIN = "root@example.com"
STORAGES = [
    pytest.param("", id="counter-file"),
    pytest.param(
        os.environ.get("TALLY_TEST_REDIS_URL", ""),
        id="redis",
        marks=pytest.mark.skipif(
            not os.environ.get("TALLY_TEST_REDIS_URL"), reason="TALLY_TEST_REDIS_URL unset"
        ),
    ),
]


class Browser:
    """A browser behind the proxy at ``address``: its own cookies (session, device)."""

    def __init__(self, url: str, address: str):
        self.url, self.address = url, address
        self.http = requests.Session()
        self.http.headers["X-Forwarded-For"] = address

    def sign_in(self, email: str, password: str = PASSWORD) -> requests.Response:
        page = self.http.get(self.url + "/login", timeout=10)
        token = CSRF_META.search(page.text).group(1)
        data = {"email": email, "password": password, "csrf_token": token}
        return self.http.post(self.url + "/login", data=data, allow_redirects=False, timeout=10)

    def log_out(self) -> None:
        page = self.http.get(self.url + "/", timeout=10)
        token = CSRF_META.search(page.text).group(1)
        response = self.http.post(
            self.url + "/logout", data={"csrf_token": token}, allow_redirects=False, timeout=10
        )
        assert response.status_code == 303


@pytest.mark.parametrize("storage", STORAGES)
def test_25_wrong_passwords_lock_strangers_out_not_the_owner(database_url, app, storage):
    with app.extensions["tally"].sessions() as session:
        create_operator(session, ADMIN, "admin", PASSWORD, "test")
    if storage:
        forget_redis_counters(storage)
    env = tally_env(database_url, TALLY_TRUSTED_PROXIES="1", TALLY_RATELIMIT_STORAGE_URI=storage)
    proc = start_gunicorn(env, workers=2)
    try:
        owner = Browser(proc.url, "198.51.100.20")
        assert owner.sign_in(ADMIN).status_code == 303
        owner.log_out()
        attacker = Browser(proc.url, "203.0.113.66")
        statuses = [attacker.sign_in(ADMIN, f"guess {n}").status_code for n in range(25)]
        assert statuses.count(422) == 5 and statuses.count(429) == 20, statuses
        assert attacker.sign_in("another@example.com", "guess").status_code == 429
        stranger = Browser(proc.url, "192.0.2.9").sign_in(ADMIN)
        assert stranger.status_code == 429 and int(stranger.headers["Retry-After"]) > 0
        signed_in = owner.sign_in(ADMIN)
        assert signed_in.status_code == 303
        assert owner.http.get(proc.url + "/", timeout=10).status_code == 200
    finally:
        stop(proc)
        if storage:
            forget_redis_counters(storage)
