"""Settings, read from environment variables and overridable in code.

Every field has one environment variable; the seed's names (``ANALYTICS_ENABLED``,
``RATE_LIMIT_MAX``…) are honoured exactly and new ones follow the same prefixes. Values are
checked when a :class:`Settings` is built, from the environment or from code, so a bad value
fails at start-up with a :class:`~asgimon.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .ratelimit.values import (
    DEFAULT_EXEMPT,
    ENDPOINTS_RULE,
    FAIL_CLOSED_RULE,
    FORWARDED_RULE,
    HEADER_RULE,
    HEADERS_RULE,
    PROXIES_RULE,
    REDIS_OR_MEMORY_RULE,
    STRATEGY_RULE,
    is_counter_url,
    is_endpoint_rules,
    is_forwarded_header,
    is_header_mode,
    is_networks,
    is_optional_header,
    is_rule_names,
    is_strategy,
    parse_header_mode,
    parse_list,
    parse_lower,
)
from .setting_rules import check_across, read_env
from .setting_values import (
    BOOL,
    DEFAULT_EXCLUDE_PATHS,
    JWT_ALGORITHMS,
    PROJECT_ID_RULE,
    RELEASE_VARIABLES,
    STORAGE_SCHEMES,
    float_between,
    int_at_least,
    int_between,
    is_ingest_keys,
    is_key_prefix,
    is_mount_path,
    is_optional_pem,
    is_optional_rate,
    is_optional_text,
    is_optional_url,
    is_paths,
    is_project_id,
    is_sentry_keys,
    is_statuses,
    is_storage_url,
    is_words,
    parse_bool,
    parse_ingest_keys,
    parse_key,
    parse_optional_str,
    parse_paths,
    parse_statuses,
    parse_words,
    setting,
    shown,
)


@dataclass(frozen=True, slots=True)
class Settings:
    """All of asgimon's settings.

    >>> Settings(rate_limit_max=50).rate_limit_max
    50
    >>> Settings.from_env({"RATE_LIMIT_MAX": "50"}).rate_limit_max
    50
    """

    # -- Capture: what the middleware records ---------------------------------------
    enabled: bool = setting("ANALYTICS_ENABLED", True, parse_bool, BOOL)
    mount_path: str = setting(
        "ANALYTICS_MOUNT_PATH",
        "/analytics",
        str.strip,
        (is_mount_path, "a path such as /analytics (leading slash, no trailing slash)"),
    )
    project_id: str = setting(
        "ANALYTICS_PROJECT_ID",
        "default",
        str.strip,
        (is_project_id, PROJECT_ID_RULE),
    )
    exclude_paths: tuple[str, ...] = setting(
        "ANALYTICS_EXCLUDE_PATHS",
        DEFAULT_EXCLUDE_PATHS,
        parse_paths,
        (is_paths, "comma-separated paths starting with /, a trailing * for a prefix"),
    )
    max_endpoints: int = setting("ANALYTICS_MAX_ENDPOINTS", 1000, int, int_at_least(1))
    error_tracking_enabled: bool = setting("ERROR_TRACKING_ENABLED", True, parse_bool, BOOL)
    api_call_sample_rate: float = setting(
        "ANALYTICS_API_CALL_SAMPLE_RATE", 0.1, float, float_between(0.0, 1.0, "a share")
    )
    api_call_raw_per_s: int = setting(
        "ANALYTICS_API_CALL_RAW_PER_S", 100, int, int_between(0, 1_000_000, "calls a second")
    )
    slow_request_ms: float = setting(
        "ANALYTICS_SLOW_REQUEST_MS",
        2000.0,
        float,
        float_between(0.0, 600_000.0, "a number of milliseconds"),
    )
    deployment_id: str | None = setting(
        "ANALYTICS_DEPLOYMENT_ID",
        None,
        parse_optional_str,
        (
            lambda v: v is None or (isinstance(v, str) and 0 < len(v) <= 128 and v.isprintable()),
            "the release this process runs, at most 128 characters (else read from "
            + ", ".join(RELEASE_VARIABLES)
            + ")",
        ),
    )

    # -- Error tracking: what a report may hold -------------------------------------
    error_capture_statuses: tuple[tuple[int, int], ...] = setting(
        "ERROR_CAPTURE_STATUSES",
        ((500, 599),),
        parse_statuses,
        (is_statuses, "comma-separated statuses or ranges within 100-599, e.g. 500-599,429"),
    )
    error_scrub_keys: tuple[str, ...] = setting(
        "ERROR_SCRUB_KEYS",
        (),
        parse_words,
        (is_words, "comma-separated key terms to filter, besides the default denylist"),
    )
    error_scrub_defaults: bool = setting("ERROR_SCRUB_DEFAULTS", True, parse_bool, BOOL)
    error_include_locals: bool = setting("ERROR_INCLUDE_LOCALS", False, parse_bool, BOOL)
    sentry_keys: tuple[tuple[str, str], ...] = setting(
        "ERROR_SENTRY_KEYS",
        (),
        parse_ingest_keys,
        (
            is_sentry_keys,
            "comma-separated project=public-key pairs for Sentry SDKs: keys of 16+ characters,"
            " each naming one project (not *)",
        ),
    )

    # -- Storage --------------------------------------------------------------------
    storage_url: str = setting(
        "ANALYTICS_STORAGE_URL",
        "sqlite:///asgimon.db",
        str.strip,
        (
            is_storage_url,
            "memory://, sqlite:///path/to/file.db, postgresql://user@host:port/db or "
            "redis://host:port/db "
            "(schemes: " + ", ".join(STORAGE_SCHEMES) + ")",
        ),
    )
    sqlite_busy_timeout: float = setting(
        "ANALYTICS_SQLITE_BUSY_TIMEOUT", 5.0, float, float_between(0, 600)
    )
    redis_retention_hours: int = setting(
        "ANALYTICS_REDIS_RETENTION_HOURS", 24, int, int_at_least(1)
    )
    redis_key_prefix: str = setting(
        "ANALYTICS_REDIS_KEY_PREFIX",
        "asgimon",
        str.strip,
        (is_key_prefix, "1 to 64 letters, digits, '-', '_' or '.'"),
    )

    # -- The recorder: queue, batches, retries, shutdown ----------------------------
    queue_max_events: int = setting("ANALYTICS_QUEUE_MAX_EVENTS", 100_000, int, int_at_least(1))
    queue_max_bytes: int = setting(
        "ANALYTICS_QUEUE_MAX_BYTES", 64 * 1024 * 1024, int, int_at_least(1024)
    )
    batch_size: int = setting("ANALYTICS_BATCH_SIZE", 5000, int, int_at_least(1))
    flush_interval: float = setting(
        "ANALYTICS_FLUSH_INTERVAL", 1.0, float, float_between(0.001, 60)
    )
    shutdown_timeout: float = setting(
        "ANALYTICS_SHUTDOWN_TIMEOUT", 5.0, float, float_between(0, 600)
    )
    retry_backoff_max: float = setting(
        "ANALYTICS_RETRY_BACKOFF_MAX", 5.0, float, float_between(0.001, 300)
    )
    retry_deadline: float = setting(
        "ANALYTICS_RETRY_DEADLINE", 30.0, float, float_between(0, 86_400)
    )
    gc_freeze: bool = setting("ANALYTICS_GC_FREEZE", True, parse_bool, BOOL)
    n_plus_one_threshold: int = setting(
        "ANALYTICS_N_PLUS_ONE_THRESHOLD", 5, int, int_between(1, 100_000, "a number of runs")
    )
    system_metrics_interval: float = setting(
        "ANALYTICS_SYSTEM_METRICS_INTERVAL",
        10.0,
        float,
        (
            lambda v: isinstance(v, int | float) and (v == 0 or 1 <= v <= 3600),
            "0 (off) or a number of seconds from 1 to 3600",
        ),
    )

    # -- Retention and periodic jobs ------------------------------------------------
    metrics_retention_days: int = setting("METRICS_RETENTION_DAYS", 90, int, int_at_least(1))
    error_log_retention_days: int = setting("ERROR_LOG_RETENTION_DAYS", 30, int, int_at_least(1))
    minute_rollup_retention_days: int = setting(
        "ANALYTICS_MINUTE_ROLLUP_RETENTION_DAYS", 7, int, int_at_least(1)
    )
    hour_rollup_retention_days: int = setting(
        "ANALYTICS_HOUR_ROLLUP_RETENTION_DAYS", 90, int, int_at_least(1)
    )
    day_rollup_retention_days: int = setting(
        "ANALYTICS_DAY_ROLLUP_RETENTION_DAYS", 365, int, int_at_least(1)
    )
    purge_interval: float = setting(
        "ANALYTICS_PURGE_INTERVAL", 3600.0, float, float_between(1, 7 * 86_400)
    )
    compact_interval: float = setting(
        "ANALYTICS_COMPACT_INTERVAL", 300.0, float, float_between(1.0, 7 * 86_400.0)
    )
    purge_batch_size: int = setting("ANALYTICS_PURGE_BATCH_SIZE", 5000, int, int_at_least(1))

    # -- Ingestion over HTTP --------------------------------------------------------
    ingest_keys: tuple[tuple[str, str], ...] = setting(
        "ANALYTICS_INGEST_KEYS",
        (),
        parse_ingest_keys,
        (
            is_ingest_keys,
            "comma-separated project=key pairs (* for every project), keys of 16+ characters",
        ),
    )
    ingest_max_events: int = setting("ANALYTICS_INGEST_MAX_EVENTS", 1000, int, int_at_least(1))
    ingest_max_bytes: int = setting(
        "ANALYTICS_INGEST_MAX_BYTES", 1024 * 1024, int, int_at_least(1024)
    )

    # -- Who may read the API -------------------------------------------------------
    jwt_secret: str | None = setting(
        "ANALYTICS_JWT_SECRET",
        None,
        parse_optional_str,
        (is_optional_text, "a non-empty secret of at most 4096 characters"),
    )
    jwt_public_key: str | None = setting(
        "ANALYTICS_JWT_PUBLIC_KEY",
        None,
        parse_key,
        (is_optional_pem, "a PEM public key, or the path of a file holding one"),
    )
    jwt_algorithm: str | None = setting(
        "ANALYTICS_JWT_ALGORITHM",
        None,
        parse_optional_str,
        (
            lambda v: v is None or v in JWT_ALGORITHMS,
            "one of " + ", ".join(JWT_ALGORITHMS) + " (default: HS256 with a secret, "
            "RS256 with a public key)",
        ),
    )
    jwt_audience: str | None = setting(
        "ANALYTICS_JWT_AUDIENCE", None, parse_optional_str, (is_optional_text, "a non-empty text")
    )
    jwt_issuer: str | None = setting(
        "ANALYTICS_JWT_ISSUER", None, parse_optional_str, (is_optional_text, "a non-empty text")
    )
    jwt_leeway: int = setting("ANALYTICS_JWT_LEEWAY", 30, int, int_at_least(0))
    api_rate_limit: str | None = setting(
        "ANALYTICS_API_RATE_LIMIT",
        "600/minute",
        parse_optional_str,
        (
            is_optional_rate,
            "a rate such as 600/minute or 20/second (several separated by ;), empty for none",
        ),
    )

    # -- Analytics: figures and their cache -----------------------------------------
    apdex_threshold_ms: float = setting(
        "ANALYTICS_APDEX_THRESHOLD_MS",
        500.0,
        float,
        float_between(1.0, 600_000.0, "a number of milliseconds"),
    )
    local_cache_ttl: int = setting("ANALYTICS_LOCAL_CACHE_TTL", 300, int, int_at_least(0))
    cache_ttl: int = setting("ANALYTICS_CACHE_TTL", 3600, int, int_at_least(0))
    redis_url: str | None = setting(
        "ANALYTICS_REDIS_URL",
        None,
        parse_optional_str,
        (is_optional_url(("redis", "rediss", "unix")), "a redis:// or rediss:// URL"),
    )

    # -- Rate limiting of the host app ----------------------------------------------
    rate_limit_enabled: bool = setting("RATE_LIMIT_ENABLED", True, parse_bool, BOOL)
    rate_limit_max: int = setting("RATE_LIMIT_MAX", 100, int, int_at_least(1))
    rate_limit_window: int = setting("RATE_LIMIT_WINDOW", 60, int, int_at_least(1))
    rate_limit_burst: int = setting("RATE_LIMIT_BURST", 10, int, int_at_least(0))
    rate_limit_strategy: str = setting(
        "RATE_LIMIT_STRATEGY", "fixed-window", parse_lower, (is_strategy, STRATEGY_RULE)
    )
    rate_limit_endpoints: str = setting(
        "RATE_LIMIT_ENDPOINTS", "", str.strip, (is_endpoint_rules, ENDPOINTS_RULE)
    )
    rate_limit_exempt: tuple[str, ...] = setting(
        "RATE_LIMIT_EXEMPT",
        DEFAULT_EXEMPT,
        parse_paths,
        (is_paths, "comma-separated paths starting with /, a trailing * for a prefix"),
    )
    rate_limit_shadow: bool = setting("RATE_LIMIT_SHADOW", False, parse_bool, BOOL)
    rate_limit_headers: str = setting(
        "RATE_LIMIT_HEADERS", "ietf", parse_header_mode, (is_header_mode, HEADERS_RULE)
    )
    rate_limit_trusted_proxies: tuple[str, ...] = setting(
        "RATE_LIMIT_TRUSTED_PROXIES", (), parse_list, (is_networks, PROXIES_RULE)
    )
    rate_limit_ipv6_prefix: int = setting(
        "RATE_LIMIT_IPV6_PREFIX", 64, int, int_between(16, 128, "a prefix length")
    )
    rate_limit_forwarded_header: str = setting(
        "RATE_LIMIT_FORWARDED_HEADER",
        "x-forwarded-for",
        parse_lower,
        (is_forwarded_header, FORWARDED_RULE),
    )
    rate_limit_key_header: str | None = setting(
        "RATE_LIMIT_KEY_HEADER", None, parse_optional_str, (is_optional_header, HEADER_RULE)
    )
    rate_limit_jwt_subject: bool = setting("RATE_LIMIT_JWT_SUBJECT", False, parse_bool, BOOL)
    rate_limit_hash_keys: bool = setting("RATE_LIMIT_HASH_KEYS", True, parse_bool, BOOL)
    rate_limit_fail_closed: tuple[str, ...] = setting(
        "RATE_LIMIT_FAIL_CLOSED", (), parse_list, (is_rule_names, FAIL_CLOSED_RULE)
    )
    rate_limit_timeout_ms: float = setting(
        "RATE_LIMIT_TIMEOUT_MS",
        100.0,
        float,
        float_between(1.0, 10_000.0, "a number of milliseconds"),
    )
    rate_limit_storage_url: str | None = setting(
        "RATE_LIMIT_STORAGE_URL", None, parse_optional_str, (is_counter_url, REDIS_OR_MEMORY_RULE)
    )

    # -- Alerts ---------------------------------------------------------------------
    alerts_enabled: bool = setting("ALERTS_ENABLED", True, parse_bool, BOOL)
    email_alerts_enabled: bool = setting("EMAIL_ALERTS_ENABLED", True, parse_bool, BOOL)
    webhook_alerts_enabled: bool = setting("WEBHOOK_ALERTS_ENABLED", True, parse_bool, BOOL)
    smtp_url: str | None = setting(
        "ALERTS_SMTP_URL",
        None,
        parse_optional_str,
        (is_optional_url(("smtp", "smtps")), "an smtp:// or smtps:// URL"),
    )
    smtp_from: str = setting(
        "ALERTS_SMTP_FROM",
        "asgimon@localhost",
        str.strip,
        (lambda v: isinstance(v, str) and 3 <= len(v) <= 254 and "@" in v, "an email address"),
    )
    smtp_timeout: float = setting("ALERTS_SMTP_TIMEOUT", 10.0, float, float_between(0.1, 120))
    webhook_timeout: float = setting("ALERTS_WEBHOOK_TIMEOUT", 10.0, float, float_between(0.1, 120))
    webhook_allow: tuple[str, ...] = setting(
        "ALERTS_WEBHOOK_ALLOW",
        (),
        parse_list,
        (is_networks, "comma-separated addresses or networks webhooks may reach though private"),
    )
    alerts_max_attempts: int = setting("ALERTS_MAX_ATTEMPTS", 5, int, int_between(1, 20))
    alerts_retry_deadline: float = setting(
        "ALERTS_RETRY_DEADLINE", 300.0, float, float_between(0.1, 86_400)
    )
    alerts_channel_rate: int = setting("ALERTS_CHANNEL_RATE", 30, int, int_between(1, 10_000))
    alerts_interval: float = setting(
        "ALERTS_EVALUATION_INTERVAL", 60.0, float, float_between(1, 3600)
    )
    dashboard_url: str | None = setting(
        "ANALYTICS_DASHBOARD_URL",
        None,
        parse_optional_str,
        (is_optional_url(("http", "https")), "the dashboard's public address, http(s)://…"),
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            check, allowed = f.metadata["check"]
            if not check(value):
                raise ConfigError(f.metadata["env"], shown(f.name, value), allowed)
        check_across(self)

    @property
    def jwt_configured(self) -> bool:
        return self.jwt_secret is not None or self.jwt_public_key is not None

    @property
    def jwt_pinned_algorithm(self) -> str:
        if self.jwt_algorithm is not None:
            return self.jwt_algorithm
        return "HS256" if self.jwt_secret is not None else "RS256"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every variable from ``environ`` (default ``os.environ``); ``overrides`` win."""
        env = os.environ if environ is None else environ
        return cls(**read_env(dataclasses.fields(cls), env, overrides))

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated like the original."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def env_names() -> dict[str, str]:
        """Field name to environment variable, for documentation and tooling."""
        return {f.name: f.metadata["env"] for f in dataclasses.fields(Settings)}
