"""Which stored events an event rule matches, and with what value and labels."""

from __future__ import annotations

from asgimon.events import DeploymentEvent, DomainEvent, ErrorEvent, Event, FunctionInvocation

from .rules import AlertRule

DAY = 86_400.0
CERTIFICATE_TYPES = frozenset({"ssl_expiring", "ssl_issued", "ssl_renewed", "verified"})
EVENT_KINDS = {
    "critical_error": "error",
    "deployment_failure": "deployment",
    "slow_deployment": "deployment",
    "function_error": "function",
    "ssl_certificate": "domain",
}
"""The kind of event each event rule reads (the error-group rules read group transitions)."""

Match = tuple[float | None, dict[str, str]]


def match(rule: AlertRule, ev: Event) -> Match | None:
    """``(value, labels)`` if ``ev`` is one the rule fires on, else None."""
    f = rule.filters
    if rule.type == "critical_error":
        if isinstance(ev, ErrorEvent) and ev.severity == "critical":
            return None, {"errorType": ev.error_type, "fingerprint": ev.fingerprint}
    elif rule.type in ("deployment_failure", "slow_deployment"):
        if not isinstance(ev, DeploymentEvent) or ev.type != "completed":
            return None
        if "framework" in f and ev.framework != f["framework"]:
            return None
        labels = {"deploymentId": ev.deployment_id}
        if rule.type == "deployment_failure" and ev.status == "failure":
            return ev.duration_ms, labels
        slow = ev.duration_ms is not None and ev.duration_ms > rule.threshold
        if rule.type == "slow_deployment" and slow:
            return ev.duration_ms, labels
    elif rule.type == "function_error" and isinstance(ev, FunctionInvocation):
        if ev.status == "error" and f.get("function", ev.function_id) == ev.function_id:
            return ev.duration_ms, {"function": ev.function_id}
    elif rule.type == "ssl_certificate" and isinstance(ev, DomainEvent):
        if "domain" in f and ev.domain != f["domain"]:
            return None
        if ev.type == "ssl_failed":
            return None, {"domain": ev.domain, "event": ev.type}
        if ev.type in CERTIFICATE_TYPES and ev.expires_at is not None:
            days = (ev.expires_at - ev.timestamp) / DAY
            if days < rule.threshold:
                return round(days, 2), {"domain": ev.domain, "event": ev.type}
    return None
