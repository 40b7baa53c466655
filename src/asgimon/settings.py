"""Settings, read from environment variables and overridable in code.

Every field has one environment variable; the seed's names (``ANALYTICS_ENABLED``,
``RATE_LIMIT_MAX``…) are honoured exactly and new ones follow the same prefixes. Values are
checked when a :class:`Settings` is built, from the environment or from code, so a bad value
fails at start-up with a :class:`~asgimon.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from limits import parse_many
from sqlalchemy.engine import make_url

from ._validate import project_id_problem
from .errors import ConfigError
from .storage.schemes import SCHEMES

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

STORAGE_SCHEMES = tuple(SCHEMES)

DEFAULT_EXCLUDE_PATHS = (
    "/health",
    "/healthz",
    "/livez",
    "/readyz",
    "/ping",
    "/favicon.ico",
    "/robots.txt",
    "/.well-known/*",
)


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(raw)


def _parse_optional_str(raw: str) -> str | None:
    return raw.strip() or None


def _parse_paths(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    def check(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    return check, f"an integer >= {low}"


def _float_between(
    low: float, high: float, what: str = "a number of seconds"
) -> tuple[Callable[[Any], bool], str]:
    def check(v: Any) -> bool:
        return (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and low <= v <= high
        )

    return check, f"{what} from {low:g} to {high:g}"


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_storage_url(v: Any) -> bool:
    if not isinstance(v, str) or "://" not in v:
        return False
    scheme = v.split("://", 1)[0].lower()
    if scheme not in STORAGE_SCHEMES:
        return False
    if scheme == "memory":
        return v.lower() == "memory://"
    if scheme.startswith("redis"):
        return len(v) > len(scheme) + 3
    try:
        url = make_url(v)
        _ = url.port  # a port that is not a number raises here, not at the first connection
    except (ValueError, TypeError):
        return False
    if scheme.startswith("sqlite"):
        return url.database not in (None, "", ":memory:")
    return bool(url.host or url.query.get("host"))


def _is_optional_url(schemes: tuple[str, ...]) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return v is None or (
            isinstance(v, str) and "://" in v and v.split("://", 1)[0].lower() in schemes
        )

    return check


def _is_optional_text(v: Any) -> bool:
    return v is None or (isinstance(v, str) and 0 < len(v) <= 4096)


def _is_mount_path(v: Any) -> bool:
    return (
        isinstance(v, str)
        and v.startswith("/")
        and not v.endswith("/")
        and len(v) <= 200
        and all(c.isalnum() or c in "-_./" for c in v)
    )


PROJECT_ID_RULE = "1 to 128 printable characters, no / or \\, no whitespace at either end"


def _is_project_id(v: Any) -> bool:
    return project_id_problem(v) is None


def _parse_ingest_keys(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in raw.split(","):
        if not item.strip():
            continue
        project, sep, key = item.strip().partition("=")
        if not sep:
            raise ValueError(item)
        pairs.append((project.strip(), key.strip()))
    return tuple(pairs)


def _is_ingest_keys(v: Any) -> bool:
    return isinstance(v, tuple) and all(
        isinstance(p, tuple)
        and len(p) == 2
        and (p[0] == "*" or _is_project_id(p[0]))
        and isinstance(p[1], str)
        and 16 <= len(p[1]) <= 256
        and p[1].isprintable()
        for p in v
    )


def _is_key_prefix(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 64 and all(c.isalnum() or c in "-_." for c in v)


def _is_paths(v: Any) -> bool:
    return isinstance(v, tuple) and all(
        isinstance(p, str) and p.startswith("/") and len(p) <= 500 for p in v
    )


SECRET_FIELDS = frozenset({"jwt_secret", "ingest_keys"})


def _shown(field_name: str, value: Any) -> Any:
    """A value for an error message: secrets are never printed (logs travel far)."""
    return "(hidden)" if field_name in SECRET_FIELDS else value


JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512")


def _parse_key(raw: str) -> str | None:
    text = raw.strip()
    if not text or text.startswith("-----BEGIN"):
        return text or None
    try:
        with open(text, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        raise ValueError(raw) from None


def _is_optional_pem(v: Any) -> bool:
    return v is None or (
        isinstance(v, str) and v.startswith("-----BEGIN") and "PUBLIC KEY-----" in v
    )


def _is_optional_rate(v: Any) -> bool:
    if v is None:
        return True
    if not isinstance(v, str):
        return False
    try:
        return bool(parse_many(v))
    except ValueError:
        return False


def _setting(
    env: str,
    default: Any,
    parse: Callable[[str], Any],
    check: tuple[Callable[[Any], bool], str],
) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "check": check})


_BOOL = (_is_bool, "true or false (also 1/0, yes/no, on/off)")


@dataclass(frozen=True, slots=True)
class Settings:
    """All of asgimon's settings.

    >>> Settings(rate_limit_max=50).rate_limit_max
    50
    >>> Settings.from_env({"RATE_LIMIT_MAX": "50"}).rate_limit_max
    50
    """

    # -- Capture: what the middleware records ---------------------------------------
    enabled: bool = _setting("ANALYTICS_ENABLED", True, _parse_bool, _BOOL)
    mount_path: str = _setting(
        "ANALYTICS_MOUNT_PATH",
        "/analytics",
        str.strip,
        (_is_mount_path, "a path such as /analytics (leading slash, no trailing slash)"),
    )
    project_id: str = _setting(
        "ANALYTICS_PROJECT_ID",
        "default",
        str.strip,
        (_is_project_id, PROJECT_ID_RULE),
    )
    exclude_paths: tuple[str, ...] = _setting(
        "ANALYTICS_EXCLUDE_PATHS",
        DEFAULT_EXCLUDE_PATHS,
        _parse_paths,
        (_is_paths, "comma-separated paths starting with /, a trailing * for a prefix"),
    )
    max_endpoints: int = _setting("ANALYTICS_MAX_ENDPOINTS", 1000, int, _int_at_least(1))
    error_tracking_enabled: bool = _setting("ERROR_TRACKING_ENABLED", True, _parse_bool, _BOOL)
    api_call_sample_rate: float = _setting(
        "ANALYTICS_API_CALL_SAMPLE_RATE", 0.1, float, _float_between(0.0, 1.0, "a share")
    )
    slow_request_ms: float = _setting(
        "ANALYTICS_SLOW_REQUEST_MS",
        2000.0,
        float,
        _float_between(0.0, 600_000.0, "a number of milliseconds"),
    )

    # -- Storage --------------------------------------------------------------------
    storage_url: str = _setting(
        "ANALYTICS_STORAGE_URL",
        "sqlite:///asgimon.db",
        str.strip,
        (
            _is_storage_url,
            "memory://, sqlite:///path/to/file.db, postgresql://user@host:port/db or "
            "redis://host:port/db "
            "(schemes: " + ", ".join(STORAGE_SCHEMES) + ")",
        ),
    )
    sqlite_busy_timeout: float = _setting(
        "ANALYTICS_SQLITE_BUSY_TIMEOUT", 5.0, float, _float_between(0, 600)
    )
    redis_retention_hours: int = _setting(
        "ANALYTICS_REDIS_RETENTION_HOURS", 24, int, _int_at_least(1)
    )
    redis_key_prefix: str = _setting(
        "ANALYTICS_REDIS_KEY_PREFIX",
        "asgimon",
        str.strip,
        (_is_key_prefix, "1 to 64 letters, digits, '-', '_' or '.'"),
    )

    # -- The recorder: queue, batches, retries, shutdown ----------------------------
    queue_max_events: int = _setting("ANALYTICS_QUEUE_MAX_EVENTS", 100_000, int, _int_at_least(1))
    queue_max_bytes: int = _setting(
        "ANALYTICS_QUEUE_MAX_BYTES", 64 * 1024 * 1024, int, _int_at_least(1024)
    )
    batch_size: int = _setting("ANALYTICS_BATCH_SIZE", 5000, int, _int_at_least(1))
    flush_interval: float = _setting(
        "ANALYTICS_FLUSH_INTERVAL", 1.0, float, _float_between(0.001, 60)
    )
    shutdown_timeout: float = _setting(
        "ANALYTICS_SHUTDOWN_TIMEOUT", 5.0, float, _float_between(0, 600)
    )
    retry_backoff_max: float = _setting(
        "ANALYTICS_RETRY_BACKOFF_MAX", 5.0, float, _float_between(0.001, 300)
    )
    retry_deadline: float = _setting(
        "ANALYTICS_RETRY_DEADLINE", 30.0, float, _float_between(0, 86_400)
    )
    gc_freeze: bool = _setting("ANALYTICS_GC_FREEZE", True, _parse_bool, _BOOL)

    # -- Retention and periodic jobs ------------------------------------------------
    metrics_retention_days: int = _setting("METRICS_RETENTION_DAYS", 90, int, _int_at_least(1))
    error_log_retention_days: int = _setting("ERROR_LOG_RETENTION_DAYS", 30, int, _int_at_least(1))
    minute_rollup_retention_days: int = _setting(
        "ANALYTICS_MINUTE_ROLLUP_RETENTION_DAYS", 7, int, _int_at_least(1)
    )
    hour_rollup_retention_days: int = _setting(
        "ANALYTICS_HOUR_ROLLUP_RETENTION_DAYS", 90, int, _int_at_least(1)
    )
    day_rollup_retention_days: int = _setting(
        "ANALYTICS_DAY_ROLLUP_RETENTION_DAYS", 365, int, _int_at_least(1)
    )
    purge_interval: float = _setting(
        "ANALYTICS_PURGE_INTERVAL", 3600.0, float, _float_between(1, 7 * 86_400)
    )
    compact_interval: float = _setting(
        "ANALYTICS_COMPACT_INTERVAL", 300.0, float, _float_between(1.0, 7 * 86_400.0)
    )
    purge_batch_size: int = _setting("ANALYTICS_PURGE_BATCH_SIZE", 5000, int, _int_at_least(1))

    # -- Ingestion over HTTP --------------------------------------------------------
    ingest_keys: tuple[tuple[str, str], ...] = _setting(
        "ANALYTICS_INGEST_KEYS",
        (),
        _parse_ingest_keys,
        (
            _is_ingest_keys,
            "comma-separated project=key pairs (* for every project), keys of 16+ characters",
        ),
    )
    ingest_max_events: int = _setting("ANALYTICS_INGEST_MAX_EVENTS", 1000, int, _int_at_least(1))
    ingest_max_bytes: int = _setting(
        "ANALYTICS_INGEST_MAX_BYTES", 1024 * 1024, int, _int_at_least(1024)
    )

    # -- Who may read the API -------------------------------------------------------
    jwt_secret: str | None = _setting(
        "ANALYTICS_JWT_SECRET",
        None,
        _parse_optional_str,
        (_is_optional_text, "a non-empty secret of at most 4096 characters"),
    )
    jwt_public_key: str | None = _setting(
        "ANALYTICS_JWT_PUBLIC_KEY",
        None,
        _parse_key,
        (_is_optional_pem, "a PEM public key, or the path of a file holding one"),
    )
    jwt_algorithm: str | None = _setting(
        "ANALYTICS_JWT_ALGORITHM",
        None,
        _parse_optional_str,
        (
            lambda v: v is None or v in JWT_ALGORITHMS,
            "one of " + ", ".join(JWT_ALGORITHMS) + " (default: HS256 with a secret, "
            "RS256 with a public key)",
        ),
    )
    jwt_audience: str | None = _setting(
        "ANALYTICS_JWT_AUDIENCE", None, _parse_optional_str, (_is_optional_text, "a non-empty text")
    )
    jwt_issuer: str | None = _setting(
        "ANALYTICS_JWT_ISSUER", None, _parse_optional_str, (_is_optional_text, "a non-empty text")
    )
    jwt_leeway: int = _setting("ANALYTICS_JWT_LEEWAY", 30, int, _int_at_least(0))
    api_rate_limit: str | None = _setting(
        "ANALYTICS_API_RATE_LIMIT",
        "600/minute",
        _parse_optional_str,
        (
            _is_optional_rate,
            "a rate such as 600/minute or 20/second (several separated by ;), empty for none",
        ),
    )

    # -- Analytics: figures and their cache -----------------------------------------
    apdex_threshold_ms: float = _setting(
        "ANALYTICS_APDEX_THRESHOLD_MS",
        500.0,
        float,
        _float_between(1.0, 600_000.0, "a number of milliseconds"),
    )
    local_cache_ttl: int = _setting("ANALYTICS_LOCAL_CACHE_TTL", 300, int, _int_at_least(0))
    cache_ttl: int = _setting("ANALYTICS_CACHE_TTL", 3600, int, _int_at_least(0))
    redis_url: str | None = _setting(
        "ANALYTICS_REDIS_URL",
        None,
        _parse_optional_str,
        (_is_optional_url(("redis", "rediss", "unix")), "a redis:// or rediss:// URL"),
    )

    # -- Rate limiting of the host app ----------------------------------------------
    rate_limit_enabled: bool = _setting("RATE_LIMIT_ENABLED", True, _parse_bool, _BOOL)
    rate_limit_max: int = _setting("RATE_LIMIT_MAX", 100, int, _int_at_least(1))
    rate_limit_window: int = _setting("RATE_LIMIT_WINDOW", 60, int, _int_at_least(1))
    rate_limit_burst: int = _setting("RATE_LIMIT_BURST", 10, int, _int_at_least(0))

    # -- Alerts ---------------------------------------------------------------------
    alerts_enabled: bool = _setting("ALERTS_ENABLED", True, _parse_bool, _BOOL)
    email_alerts_enabled: bool = _setting("EMAIL_ALERTS_ENABLED", True, _parse_bool, _BOOL)
    webhook_alerts_enabled: bool = _setting("WEBHOOK_ALERTS_ENABLED", True, _parse_bool, _BOOL)
    smtp_url: str | None = _setting(
        "ALERTS_SMTP_URL",
        None,
        _parse_optional_str,
        (_is_optional_url(("smtp", "smtps")), "an smtp:// or smtps:// URL"),
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            check, allowed = f.metadata["check"]
            if not check(value):
                raise ConfigError(f.metadata["env"], _shown(f.name, value), allowed)
        self._check_jwt()
        # The purge finds projects through their daily rollups: those must outlive raw data.
        longest_raw = max(self.metrics_retention_days, self.error_log_retention_days)
        if self.day_rollup_retention_days < longest_raw:
            raise ConfigError(
                "ANALYTICS_DAY_ROLLUP_RETENTION_DAYS",
                self.day_rollup_retention_days,
                f"at least METRICS_RETENTION_DAYS and ERROR_LOG_RETENTION_DAYS ({longest_raw})",
            )

    def _check_jwt(self) -> None:
        if self.jwt_configured:
            # A token minted for another service by the same issuer must not open this one.
            for name, value in (
                ("ANALYTICS_JWT_AUDIENCE", self.jwt_audience),
                ("ANALYTICS_JWT_ISSUER", self.jwt_issuer),
            ):
                if value is None:
                    raise ConfigError(name, "", "set whenever a JWT secret or public key is")
        if self.jwt_secret is not None and self.jwt_public_key is not None:
            raise ConfigError(
                "ANALYTICS_JWT_PUBLIC_KEY", "(set)", "unset while ANALYTICS_JWT_SECRET is set"
            )
        algorithm = self.jwt_algorithm
        if self.jwt_secret is not None:
            # A key shorter than the hash can be brute-forced offline from one captured token.
            need = int((algorithm or "HS256")[2:]) // 8
            if len(self.jwt_secret.encode()) < need:
                raise ConfigError("ANALYTICS_JWT_SECRET", "(hidden)", f"at least {need} bytes")
        if algorithm is None:
            return
        if algorithm.startswith("HS") and self.jwt_secret is None:
            raise ConfigError("ANALYTICS_JWT_ALGORITHM", algorithm, "RS* with a public key")
        if algorithm.startswith("RS") and self.jwt_public_key is None:
            raise ConfigError("ANALYTICS_JWT_ALGORITHM", algorithm, "HS* with a secret")

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
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            if f.name in overrides or name not in env:
                continue
            raw = env[name]
            check, allowed = f.metadata["check"]
            try:
                value = f.metadata["parse"](raw)
            except ValueError:
                raise ConfigError(name, _shown(f.name, raw), allowed) from None
            if not check(value):
                raise ConfigError(name, _shown(f.name, raw), allowed)
            values[f.name] = value
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated like the original."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def env_names() -> dict[str, str]:
        """Field name to environment variable, for documentation and tooling."""
        return {f.name: f.metadata["env"] for f in dataclasses.fields(Settings)}
