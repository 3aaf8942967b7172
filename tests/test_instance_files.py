"""The instance folder of a fresh install holds personal data and secrets: the folder is
0700 and every file in it 0600 (the SQLite database and its -wal and -shm files, the
generated secrets), whether the CLI or the server made them, under an ordinary umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import requests

from tests.helpers.gunicorn import ROOT, start_gunicorn, stop


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _fresh_env(instance) -> dict[str, str]:
    """Tally's environment with nothing but the instance folder: SQLite in it, secrets
    generated there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    return {**env, "TALLY_INSTANCE_PATH": str(instance)}


def _modes(instance) -> dict[str, int]:
    """Every entry of the instance folder, by name, with its permission bits."""
    return {entry.name: _mode(entry) for entry in instance.iterdir()}


def _private(instance) -> dict[str, int]:
    """What ``_modes`` must be: folders (the usage spool) 0700, files 0600."""
    return {entry.name: 0o700 if entry.is_dir() else 0o600 for entry in instance.iterdir()}


@pytest.fixture
def umask_022():
    """The usual umask (files 0644 unless made otherwise), for this process and the
    subprocesses it starts."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _cli(instance, *args: str) -> str:
    """``flask --app app ARGS`` on the fresh instance; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env=_fresh_env(instance),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_db_upgrade_on_a_fresh_instance_makes_private_files(tmp_path, umask_022):
    instance = tmp_path / "fresh" / "instance"
    _cli(instance, "db", "upgrade")
    assert _mode(instance) == 0o700
    modes = _modes(instance)
    assert {"tally.db", "secret_key", "hash_key"} <= set(modes)
    assert modes["tally.db"] == 0o600
    assert modes == _private(instance)  # -wal and -shm (when left), all


def test_the_server_on_a_fresh_instance_makes_private_files(tmp_path, umask_022):
    instance = tmp_path / "instance"
    _cli(instance, "db", "upgrade")
    key = _cli(instance, "keys", "create", "web").splitlines()[-1]
    proc = start_gunicorn(_fresh_env(instance))
    try:
        answer = requests.post(  # on the built-in demo upstream: a row is written
            proc.url + "/v1/chat/completions",
            json={"model": "tally/demo-echo", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert requests.get(proc.url + "/readyz", timeout=10).status_code == 200
        modes = _modes(instance)
        assert {"tally.db-wal", "tally.db-shm"} <= set(modes), modes  # in use
        assert modes == _private(instance)
        assert _mode(instance) == 0o700
    finally:
        stop(proc)


def test_an_existing_world_readable_database_is_closed_to_others(tmp_path, umask_022):
    from tally.db import make_engine

    database = tmp_path / "old.db"
    for path in (database, tmp_path / "old.db-wal", tmp_path / "old.db-shm"):
        path.touch()
        path.chmod(0o664)  # as an earlier version left it, with a backup group
    engine = make_engine(f"sqlite:///{database}")
    engine.dispose()
    assert [_mode(path) for path in sorted(tmp_path.iterdir())] == [0o660, 0o660, 0o660]
