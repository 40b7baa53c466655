"""How long each kind of data is kept: cutoffs for ``Storage.purge`` from the settings."""

from __future__ import annotations

import time

from .settings import Settings

DAY = 86_400.0
# Longer than twice the longest period a job may have (7 days): a period's claim must
# outlive the period, or a late worker could claim it again.
CLAIMS_KEPT_S = 15 * DAY


def cutoffs(settings: Settings, now: float | None = None) -> dict[str, float]:
    """Everything older than its cutoff (epoch seconds) may be deleted.

    Raw events: ``METRICS_RETENTION_DAYS``; error events: ``ERROR_LOG_RETENTION_DAYS``;
    minute / hour / day rollups: their own settings (7, 90 and 365 days by default).
    """
    now = time.time() if now is None else now
    raw = now - settings.metrics_retention_days * DAY
    return {
        "api_call": raw,
        "deployment": raw,
        "build": raw,
        "function": raw,
        "domain": raw,
        "error": now - settings.error_log_retention_days * DAY,
        "rollup:minute": now - settings.minute_rollup_retention_days * DAY,
        "rollup:hour": now - settings.hour_rollup_retention_days * DAY,
        "rollup:day": now - settings.day_rollup_retention_days * DAY,
        "claims": now - CLAIMS_KEPT_S,
    }
