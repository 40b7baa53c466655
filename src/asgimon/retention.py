"""How long each kind of data is kept: cutoffs for ``Storage.purge`` from the settings."""

from __future__ import annotations

import time

from .events import EVENT_TYPES
from .settings import Settings

DAY = 86_400.0
# Longer than twice the longest period a job may have (7 days): a period's claim must
# outlive the period, or a late worker could claim it again.
CLAIMS_KEPT_S = 15 * DAY


def cutoffs(settings: Settings, now: float | None = None) -> dict[str, float]:
    """Everything older than its cutoff (epoch seconds) may be deleted.

    Each kind of event by the setting its class names (``METRICS_RETENTION_DAYS``; errors
    ``ERROR_LOG_RETENTION_DAYS``); minute / hour / day rollups by their own settings (7, 90
    and 365 days by default). An error group's lifecycle (``error_groups``, by its last
    occurrence) lasts as long as its errors or its hourly counts, whichever is longer: a
    resolved group that recurs within that time is a regression, not a new group.
    """
    now = time.time() if now is None else now
    kept: dict[str, float] = {
        kind: now - getattr(settings, cls.retention) * DAY for kind, cls in EVENT_TYPES.items()
    }
    return {
        **kept,
        "rollup:minute": now - settings.minute_rollup_retention_days * DAY,
        "rollup:hour": now - settings.hour_rollup_retention_days * DAY,
        "rollup:day": now - settings.day_rollup_retention_days * DAY,
        "claims": now - CLAIMS_KEPT_S,
        "alert_history": now - settings.metrics_retention_days * DAY,
        "error_groups": now
        - max(settings.error_log_retention_days, settings.hour_rollup_retention_days) * DAY,
    }
