from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from asgimon import ConfigError, Monitor, Settings


def test_defaults_match_the_documented_ones() -> None:
    s = Settings.from_env({})
    assert s.enabled
    assert s.rate_limit_enabled
    assert s.alerts_enabled
    assert (s.cache_ttl, s.metrics_retention_days, s.error_log_retention_days) == (3600, 90, 30)
    assert (s.rate_limit_max, s.rate_limit_window, s.rate_limit_burst) == (100, 60, 10)
    assert s.storage_url == "sqlite:///asgimon.db"
    assert s.mount_path == "/analytics"


def test_every_seed_variable_is_read() -> None:
    env = {
        "ANALYTICS_ENABLED": "false",
        "ANALYTICS_CACHE_TTL": "60",
        "METRICS_RETENTION_DAYS": "7",
        "RATE_LIMIT_ENABLED": "0",
        "RATE_LIMIT_MAX": "5",
        "RATE_LIMIT_WINDOW": "10",
        "ERROR_TRACKING_ENABLED": "no",
        "ERROR_LOG_RETENTION_DAYS": "3",
        "ALERTS_ENABLED": "off",
        "EMAIL_ALERTS_ENABLED": "FALSE",
        "WEBHOOK_ALERTS_ENABLED": "False",
        "ANALYTICS_STORAGE_URL": "postgresql://u@127.0.0.1/db",
        "ANALYTICS_REDIS_URL": "redis://127.0.0.1:6379/0",
        "RATE_LIMIT_BURST": "0",
        "ANALYTICS_JWT_SECRET": "s3cret-s3cret-s3cret-s3cret-s3cret",
        "ANALYTICS_JWT_AUDIENCE": "asgimon",
        "ANALYTICS_JWT_ISSUER": "https://id.example",
        "ALERTS_SMTP_URL": "smtp://127.0.0.1:25",
    }
    s = Settings.from_env(env)
    assert not s.enabled
    assert not s.rate_limit_enabled
    assert not s.error_tracking_enabled
    assert not s.alerts_enabled
    assert not s.email_alerts_enabled
    assert not s.webhook_alerts_enabled
    assert (s.cache_ttl, s.metrics_retention_days, s.error_log_retention_days) == (60, 7, 3)
    assert (s.rate_limit_max, s.rate_limit_window, s.rate_limit_burst) == (5, 10, 0)
    assert s.storage_url == "postgresql://u@127.0.0.1/db"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.jwt_secret == "s3cret-s3cret-s3cret-s3cret-s3cret"
    assert s.smtp_url == "smtp://127.0.0.1:25"


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("RATE_LIMIT_MAX", "ten", "an integer >= 1"),
        ("RATE_LIMIT_MAX", "0", "an integer >= 1"),
        ("RATE_LIMIT_MAX", "-3", "an integer >= 1"),
        ("RATE_LIMIT_MAX", "1.5", "an integer >= 1"),
        ("ANALYTICS_ENABLED", "maybe", "true or false"),
        ("ANALYTICS_CACHE_TTL", "", "an integer >= 0"),
        ("ANALYTICS_FLUSH_INTERVAL", "nan", "a number of seconds"),
        ("ANALYTICS_FLUSH_INTERVAL", "inf", "a number of seconds"),
        ("ANALYTICS_FLUSH_INTERVAL", "0", "a number of seconds"),
        ("ANALYTICS_STORAGE_URL", "mysql://x", "sqlite:///path/to/file.db"),
        ("ANALYTICS_STORAGE_URL", "asgimon.db", "sqlite:///path/to/file.db"),
        ("ANALYTICS_STORAGE_URL", "sqlite://", "sqlite:///path/to/file.db"),
        ("ANALYTICS_STORAGE_URL", "sqlite:///:memory:", "sqlite:///path/to/file.db"),
        ("ANALYTICS_STORAGE_URL", "postgresql://u@127.0.0.1:notaport/db", "postgresql://"),
        ("ANALYTICS_STORAGE_URL", "postgresql:///db", "postgresql://"),
        ("ANALYTICS_STORAGE_URL", "memory://somewhere", "memory://"),
        ("ANALYTICS_REDIS_URL", "http://x", "a redis:// or rediss:// URL"),
        ("ALERTS_WEBHOOK_ALLOW", "10.0.0.0/33", "addresses or networks"),
        ("ALERTS_EVALUATION_INTERVAL", "0.5", "a number of seconds from 1 to 3600"),
        ("ANALYTICS_SYSTEM_METRICS_INTERVAL", "0.5", "0 (off) or a number of seconds"),
        ("ANALYTICS_MOUNT_PATH", "analytics", "a path such as /analytics"),
        ("ANALYTICS_MOUNT_PATH", "/analytics/", "a path such as /analytics"),
        ("ANALYTICS_EXCLUDE_PATHS", "health", "comma-separated paths"),
        ("ANALYTICS_PROJECT_ID", "x" * 129, "1 to 128 printable characters"),
        ("ANALYTICS_QUEUE_MAX_BYTES", "100", "an integer >= 1024"),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_is_allowed(
    name: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert message.startswith(f"{name}={value!r} is invalid: expected ")
    assert allowed in message
    assert info.value.name == name


def test_code_overrides_win_over_the_environment_and_are_validated() -> None:
    s = Settings.from_env({"RATE_LIMIT_MAX": "5"}, rate_limit_max=7)
    assert s.rate_limit_max == 7
    with pytest.raises(ConfigError, match="RATE_LIMIT_MAX=0 is invalid"):
        Settings(rate_limit_max=0)
    with pytest.raises(ConfigError, match="ANALYTICS_ENABLED='yes' is invalid"):
        Settings(enabled="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown setting"):
        Settings.from_env({}, no_such_setting=1)


def test_monitor_from_env_fails_at_start_up_on_a_bad_variable() -> None:
    with pytest.raises(ConfigError, match="ANALYTICS_BATCH_SIZE"):
        Monitor.from_env({"ANALYTICS_BATCH_SIZE": "lots"})


def test_exclusions_parse_exact_paths_and_prefixes() -> None:
    s = Settings.from_env({"ANALYTICS_EXCLUDE_PATHS": "/status, /internal/*"})
    assert s.exclude_paths == ("/status", "/internal/*")
    exact, prefixes = Monitor(s, storage_url="memory://").excluded_paths()
    assert "/status" in exact
    assert "/analytics" in exact
    assert "/internal/" in prefixes
    assert "/analytics/" in prefixes


def test_every_field_has_an_environment_variable() -> None:
    names = Settings.env_names()
    assert len(names) == len(dataclasses.fields(Settings))
    assert len(set(names.values())) == len(names)


def test_every_variable_is_documented() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    missing = [env for env in Settings.env_names().values() if f"`{env}`" not in docs]
    assert missing == []


def test_secrets_are_never_printed_in_a_start_up_error() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"ANALYTICS_INGEST_KEYS": "prod=0123456789abcdef-real-key,x=short"})
    assert "real-key" not in str(info.value)
    assert "ANALYTICS_INGEST_KEYS='(hidden)'" in str(info.value)
    with pytest.raises(ConfigError) as smtp:
        Settings.from_env({"ALERTS_SMTP_URL": "mail://alerts:s3cret@mail.example"})
    assert "s3cret" not in str(smtp.value)
    assert "ALERTS_SMTP_URL='(hidden)' is invalid: expected an smtp:// or smtps:// URL" in str(
        smtp.value
    )
