"""The rule types: what each watches, how it is judged, and its defaults.

Two modes. An *event* rule is judged on each matching event as it is stored (a critical
error, a failed deployment, a certificate that fails) and resolves once ``window`` passes
without another. A *window* rule is judged every evaluation period on the rollups of its
last ``window`` seconds (an error rate, a p95 latency) and resolves when it is back under
its threshold. Every comparison is "value above threshold".
"""

from __future__ import annotations

from dataclasses import dataclass

EVENT = "event"
WINDOW = "window"

FILTERS = ("endpoint", "method", "function", "severity", "framework", "domain", "rule")
STATISTICS = ("avg", "p95", "p99")


@dataclass(frozen=True, slots=True)
class RuleType:
    name: str
    mode: str
    label: str
    unit: str
    threshold: float
    window: int
    filters: tuple[str, ...] = ()
    statistic: bool = False
    """Whether the rule chooses the statistic compared (``avg``, ``p95``, ``p99``)."""
    needs_threshold: bool = True
    """Event rules that fire on the event itself take no threshold."""


_TYPES = (
    RuleType("error_count", WINDOW, "Errors in a window", "errors", 10, 300, ("severity",)),
    RuleType("error_rate", WINDOW, "API error rate (5xx)", "%", 5, 300, ("endpoint", "method")),
    RuleType(
        "error_spike",
        WINDOW,
        "Error spike against the previous window",
        "x",
        2,
        300,
        ("severity",),
    ),
    RuleType("critical_error", EVENT, "A critical error", "", 0, 3600, needs_threshold=False),
    RuleType(
        "new_error_group",
        EVENT,
        "A new kind of error",
        "",
        0,
        3600,
        ("severity",),
        needs_threshold=False,
    ),
    RuleType(
        "error_regression",
        EVENT,
        "A resolved error came back",
        "",
        0,
        3600,
        ("severity",),
        needs_threshold=False,
    ),
    RuleType(
        "deployment_failure",
        EVENT,
        "A failed deployment",
        "",
        0,
        3600,
        ("framework",),
        needs_threshold=False,
    ),
    RuleType(
        "deployment_failure_rate",
        WINDOW,
        "Deployment failure rate",
        "%",
        10,
        3600,
        ("framework",),
    ),
    RuleType("slow_deployment", EVENT, "A slow deployment", "ms", 600_000, 3600, ("framework",)),
    RuleType(
        "function_error",
        EVENT,
        "A function invocation failed",
        "",
        0,
        3600,
        ("function",),
        needs_threshold=False,
    ),
    RuleType("function_error_rate", WINDOW, "Function error rate", "%", 5, 3600, ("function",)),
    RuleType(
        "slow_function", WINDOW, "Slow function", "ms", 500, 300, ("function",), statistic=True
    ),
    RuleType(
        "api_latency",
        WINDOW,
        "API latency",
        "ms",
        500,
        300,
        ("endpoint", "method"),
        statistic=True,
    ),
    RuleType(
        "build_slowdown",
        WINDOW,
        "Builds slower than the previous period",
        "x",
        1.5,
        86_400,
        ("framework",),
    ),
    RuleType("memory", WINDOW, "Process memory", "MB", 1024, 300, statistic=True),
    RuleType(
        "ssl_certificate",
        EVENT,
        "A certificate failed or expires soon",
        "days",
        14,
        86_400,
        ("domain",),
    ),
    RuleType("rate_limit_denials", WINDOW, "Rate-limit denials", "denials", 100, 300, ("rule",)),
)

RULE_TYPES: dict[str, RuleType] = {t.name: t for t in _TYPES}
EVENT_TYPES = frozenset(t.name for t in _TYPES if t.mode == EVENT)
