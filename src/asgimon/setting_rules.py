"""What :class:`~asgimon.settings.Settings` checks across its fields, and how it reads them
from the environment: each failure a :class:`~asgimon.errors.ConfigError` naming the
variable to change."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .errors import ConfigError
from .ratelimit.values import rule_names
from .setting_values import RELEASE_VARIABLES, shown


class Checked(Protocol):
    """The settings these checks read (:class:`~asgimon.settings.Settings` has them all;
    it is not named here, since it calls them)."""

    @property
    def jwt_configured(self) -> bool: ...
    @property
    def jwt_audience(self) -> str | None: ...
    @property
    def jwt_issuer(self) -> str | None: ...
    @property
    def jwt_secret(self) -> str | None: ...
    @property
    def jwt_public_key(self) -> str | None: ...
    @property
    def jwt_algorithm(self) -> str | None: ...
    @property
    def rate_limit_fail_closed(self) -> tuple[str, ...]: ...
    @property
    def rate_limit_endpoints(self) -> str: ...
    @property
    def rate_limit_jwt_subject(self) -> bool: ...
    @property
    def metrics_retention_days(self) -> int: ...
    @property
    def error_log_retention_days(self) -> int: ...
    @property
    def day_rollup_retention_days(self) -> int: ...


def check_across(s: Checked) -> None:
    """Values each valid alone that do not hold together."""
    _check_jwt(s)
    _check_rate_limit(s)
    # The purge finds projects through their daily rollups: those must outlive raw data.
    longest_raw = max(s.metrics_retention_days, s.error_log_retention_days)
    if s.day_rollup_retention_days < longest_raw:
        raise ConfigError(
            "ANALYTICS_DAY_ROLLUP_RETENTION_DAYS",
            s.day_rollup_retention_days,
            f"at least METRICS_RETENTION_DAYS and ERROR_LOG_RETENTION_DAYS ({longest_raw})",
        )


def _check_jwt(s: Checked) -> None:
    if s.jwt_configured:
        # A token minted for another service by the same issuer must not open this one.
        for name, value in (
            ("ANALYTICS_JWT_AUDIENCE", s.jwt_audience),
            ("ANALYTICS_JWT_ISSUER", s.jwt_issuer),
        ):
            if value is None:
                raise ConfigError(name, "", "set whenever a JWT secret or public key is")
    if s.jwt_secret is not None and s.jwt_public_key is not None:
        raise ConfigError(
            "ANALYTICS_JWT_PUBLIC_KEY", "(set)", "unset while ANALYTICS_JWT_SECRET is set"
        )
    algorithm = s.jwt_algorithm
    if s.jwt_secret is not None:
        # A key shorter than the hash can be brute-forced offline from one captured token.
        need = int((algorithm or "HS256")[2:]) // 8
        if len(s.jwt_secret.encode()) < need:
            raise ConfigError("ANALYTICS_JWT_SECRET", "(hidden)", f"at least {need} bytes")
    if algorithm is None:
        return
    if algorithm.startswith("HS") and s.jwt_secret is None:
        raise ConfigError("ANALYTICS_JWT_ALGORITHM", algorithm, "RS* with a public key")
    if algorithm.startswith("RS") and s.jwt_public_key is None:
        raise ConfigError("ANALYTICS_JWT_ALGORITHM", algorithm, "HS* with a secret")


def _check_rate_limit(s: Checked) -> None:
    unknown = set(s.rate_limit_fail_closed) - rule_names(s.rate_limit_endpoints)
    if unknown:
        raise ConfigError(
            "RATE_LIMIT_FAIL_CLOSED",
            ", ".join(sorted(unknown)),
            "default, or a target of RATE_LIMIT_ENDPOINTS: "
            + ", ".join(sorted(rule_names(s.rate_limit_endpoints))),
        )
    if s.rate_limit_jwt_subject and not s.jwt_configured:
        raise ConfigError(
            "RATE_LIMIT_JWT_SUBJECT",
            "true",
            "false unless ANALYTICS_JWT_SECRET or ANALYTICS_JWT_PUBLIC_KEY verifies the tokens",
        )


def read_env(
    fields: Iterable[dataclasses.Field[Any]], env: Mapping[str, str], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Each field's value from its variable in ``env``, parsed and checked; ``overrides``
    (values from code) win over the environment."""
    fields = list(fields)
    values: dict[str, Any] = {}
    for f in fields:
        name = f.metadata["env"]
        if f.name in overrides or name not in env:
            continue
        raw = env[name]
        check, allowed = f.metadata["check"]
        try:
            value = f.metadata["parse"](raw)
        except ValueError:
            raise ConfigError(name, shown(f.name, raw), allowed) from None
        if not check(value):
            raise ConfigError(name, shown(f.name, raw), allowed)
        values[f.name] = value
    if "deployment_id" not in values and "deployment_id" not in overrides:
        set_ = (env[v].strip() for v in RELEASE_VARIABLES if env.get(v, "").strip())
        release = next(set_, None)
        if release is not None and len(release) <= 128 and release.isprintable():
            values["deployment_id"] = release
    unknown = set(overrides) - {f.name for f in fields}
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values.update(overrides)
    return values
