"""Configuration from the environment; secrets generated once into the instance folder."""

import os
import stat

import pytest

from tally.settings import (
    ServerSettings,
    Settings,
    SettingsError,
    load_server_settings,
    load_settings,
)


def test_defaults(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("TALLY_"):
            monkeypatch.delenv(name)
    settings = load_settings(str(tmp_path))
    assert settings.database_url == "sqlite:///" + str(tmp_path / "tally.db")
    assert settings.upstream_url is None and settings.usage_writes == "background"
    assert settings.upstream_timeout == 300 and settings.max_body_bytes == 10 * 1024 * 1024
    assert settings.ratelimit_storage_uri is None


def test_secrets_are_generated_once_and_kept_private(tmp_path):
    first = load_settings(str(tmp_path), {})
    second = load_settings(str(tmp_path), {})
    assert first.secret_key == second.secret_key and len(first.secret_key) >= 32
    assert first.hash_key == second.hash_key and first.hash_key != first.secret_key
    for name in ("secret_key", "hash_key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hash_key", "secret_key"]


def test_environment_wins(tmp_path):
    settings = load_settings(
        str(tmp_path),
        {
            "TALLY_HASH_KEY": "k",
            "TALLY_UPSTREAM_URL": "https://openrouter.ai/api/v1/",
            "TALLY_UPSTREAM_TIMEOUT": "12.5",
            "TALLY_MAX_BODY_BYTES": "1000",
            "TALLY_BODY_TIMEOUT": "7.5",
        },
    )
    assert settings.hash_key == "k"
    assert settings.body_timeout == 7.5
    assert settings.upstream_url == "https://openrouter.ai/api/v1"
    assert (settings.upstream_timeout, settings.max_body_bytes) == (12.5, 1000)


@pytest.mark.parametrize("value", ["soon", "-1", "0"])
@pytest.mark.parametrize("name", ["TALLY_UPSTREAM_TIMEOUT", "TALLY_BODY_TIMEOUT"])
def test_bad_numbers_are_refused(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings(str(tmp_path), {name: value})


def test_secrets_stay_out_of_reprs(tmp_path):
    settings = load_settings(
        str(tmp_path),
        {
            "TALLY_UPSTREAM_API_KEY": "sk-or-secret",
            "TALLY_HASH_KEY": "hmac-secret",
            "TALLY_DATABASE_URL": "postgresql://tally:pw@db/tally",
        },
    )
    text = repr(settings)
    assert isinstance(settings, Settings)
    assert "sk-or-secret" not in text and "hmac-secret" not in text and "pw@" not in text


def test_server_defaults_need_no_instance_folder(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("TALLY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    assert load_server_settings() == ServerSettings(
        bind="127.0.0.1:8000", workers=2, worker_class="gevent", threads=600
    )
    assert list(tmp_path.iterdir()) == []


def test_server_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("TALLY_WORKERS", "4")
    settings = load_server_settings(
        {"TALLY_BIND": "0.0.0.0:9000", "TALLY_WORKER_CLASS": "gthread", "TALLY_THREADS": "64"}
    )
    assert (settings.bind, settings.workers) == ("0.0.0.0:9000", 4)
    assert (settings.worker_class, settings.threads) == ("gthread", 64)
    assert load_server_settings({"TALLY_USAGE_WRITES": "inline"}).usage_writes == "inline"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TALLY_WORKERS", "two", "TALLY_WORKERS must be a whole number, got 'two'"),
        ("TALLY_WORKERS", "2.5", "TALLY_WORKERS must be a whole number"),
        ("TALLY_WORKERS", "0", "TALLY_WORKERS must be positive"),
        ("TALLY_THREADS", "-1", "TALLY_THREADS must be positive"),
        ("TALLY_WORKER_CLASS", "eventlet", "TALLY_WORKER_CLASS must be one of gevent, gthread"),
        ("TALLY_BIND", "localhost:http", "TALLY_BIND must be HOST:PORT"),
        ("TALLY_BIND", "127.0.0.1:70000", "TALLY_BIND must be HOST:PORT"),
        ("TALLY_USAGE_WRITES", "later", "TALLY_USAGE_WRITES must be one of background, inline"),
    ],
)
def test_bad_server_settings_are_refused_by_name(name, value, message):
    with pytest.raises(SettingsError, match=message):
        load_server_settings({name: value})


@pytest.mark.parametrize("value", ["127.0.0.1:8000", "localhost", "[::1]:8000", "unix:/run/t.sock"])
def test_gunicorn_bind_forms_are_accepted(value):
    assert load_server_settings({"TALLY_BIND": value}).bind == value


def test_bad_usage_writes_mode_is_refused_for_the_app_too(tmp_path):
    with pytest.raises(SettingsError, match="TALLY_USAGE_WRITES"):
        load_settings(str(tmp_path), {"TALLY_USAGE_WRITES": "sometimes"})


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, "open"), ("closed", "closed"), ("OPEN", "open")]
)
def test_ratelimit_fail(tmp_path, raw, expected):
    overrides = {} if raw is None else {"TALLY_RATELIMIT_FAIL": raw}
    assert load_settings(str(tmp_path), overrides).ratelimit_fail == expected


def test_ratelimit_fail_refuses_anything_else(tmp_path):
    with pytest.raises(SettingsError, match="TALLY_RATELIMIT_FAIL must be one of open, closed"):
        load_settings(str(tmp_path), {"TALLY_RATELIMIT_FAIL": "maybe"})
