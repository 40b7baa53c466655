"""The alert rule form: its fields in a person's units (minutes, a list of addresses) read
into the alert API's rule JSON, and every problem named by the field that was filled in.

Pure: :func:`rule_json` turns what was sent into the JSON that
:func:`~asgimon.alerts.rules.parse_rule` reads, and :func:`name_errors` puts the problems
that one finds back beside the form's own fields.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from asgimon.alerts.rules import MAX_THRESHOLD
from asgimon.alerts.types import FILTERS, RULE_TYPES, STATISTICS, RuleType
from asgimon.errors import FieldError

MINUTE = 60
DEFAULT_TYPE = "error_rate"
DEFAULT_REPEAT_MIN = 60
MAX_TEXT = 500
FILTER_LABELS = {
    "endpoint": "Endpoint",
    "method": "Method",
    "function": "Function",
    "severity": "Severity",
    "framework": "Framework",
    "domain": "Domain",
    "rule": "Rate-limit rule",
}
STATISTIC_LABELS = {"avg": "average", "p95": "p95", "p99": "p99"}
LABELS = {
    "name": "Name",
    "type": "Type",
    "threshold": "Threshold",
    "window": "Window",
    "pending": "Pending for",
    "repeat": "Repeat every",
    "statistic": "Statistic",
    **{f"f_{k}": f"{v} filter" for k, v in FILTER_LABELS.items()},
    "inapp": "In-app",
    "webhook": "Webhook URL",
    "email": "Email addresses",
    "form": "The rule",
}
"""Each field of the form, in the words its label uses."""
FIELDS = tuple(k for k in LABELS if k != "form")
# (form field, lowest, highest) in minutes, for each duration of a rule
DURATIONS = {"window": (1, 43_200), "pending": (0, 1_440), "repeat": (1, 43_200)}
API_NAMES = {
    "name": "name",
    "type": "type",
    "threshold": "threshold",
    "window": "window",
    "pendingFor": "pending",
    "repeatInterval": "repeat",
    "statistic": "statistic",
}


@dataclass
class RuleForm:
    """What was sent (to fill the form in again) and what is wrong with it, by field."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def blank(cls) -> RuleForm:
        return cls({"type": DEFAULT_TYPE, "inapp": "on", "statistic": "avg"})

    @classmethod
    def sent(cls, form: Mapping[str, str]) -> RuleForm:
        return cls({k: form[k][:MAX_TEXT] for k in FIELDS if k in form})

    @property
    def kind(self) -> RuleType:
        return RULE_TYPES.get(self.values.get("type", ""), RULE_TYPES[DEFAULT_TYPE])

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def checked(self, name: str) -> bool:
        return name in self.values

    def problems(self) -> list[tuple[str, str, str]]:
        """(field, its label, the message) for every problem, in the form's order."""
        order = [*FIELDS, "form"]
        return [(k, LABELS[k], self.errors[k]) for k in order if k in self.errors]


def _minutes(form: RuleForm, name: str, default: int) -> int:
    low, high = DURATIONS[name]
    raw = form.value(name).strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        form.errors[name] = f"must be a whole number of minutes from {low} to {high:,}"
        return default
    return int(raw)


def _threshold(form: RuleForm, kind: RuleType) -> float:
    raw = form.value("threshold").strip()
    if not kind.needs_threshold or not raw:
        return kind.threshold
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_THRESHOLD:
        form.errors["threshold"] = f"must be a number from 0 to {MAX_THRESHOLD:,.0f}"
        return kind.threshold
    return value


def _filters(form: RuleForm, kind: RuleType) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in FILTERS:
        value = form.value(f"f_{key}").strip()
        if not value:
            continue
        if key not in kind.filters:
            takes = ", ".join(FILTER_LABELS[k].lower() for k in kind.filters) or "none"
            form.errors[f"f_{key}"] = (
                f"“{kind.label}” takes no {FILTER_LABELS[key].lower()} filter"
                f" (its filters: {takes}); leave it empty"
            )
            continue
        out[key] = value
    return out


def _statistic(form: RuleForm, kind: RuleType) -> str:
    value = form.value("statistic") or "avg"
    if value not in STATISTICS:
        form.errors["statistic"] = "must be average, p95 or p99"
        return "avg"
    if value != "avg" and not kind.statistic:
        takes = ", ".join(t.label for t in RULE_TYPES.values() if t.statistic)
        form.errors["statistic"] = f"only these types compare a statistic: {takes}"
    return value


def _addresses(raw: str) -> list[str]:
    return [a for a in re.split(r"[\s,;]+", raw) if a]


def rule_json(
    form: RuleForm, available: Collection[str], *, preview: bool = False
) -> tuple[dict[str, Any] | None, list[str]]:
    """The rule the form describes as the API's JSON, and the form field of each of its
    channels (to name a channel's problem). The form's own problems go to ``form.errors``,
    a bad field's default taking its place, so that ``parse_rule`` can find the others at
    the same time; None only for a type that does not exist."""
    kind = RULE_TYPES.get(form.value("type"))
    if kind is None:
        form.errors["type"] = "choose one of the types offered"
        return None, []
    name = form.value("name").strip()
    if not name and not preview:
        form.errors["name"] = "is required: a few words that say what is wrong when it fires"
    data: dict[str, Any] = {
        "name": name or "preview",
        "type": kind.name,
        "threshold": _threshold(form, kind),
        "window": _minutes(form, "window", kind.window // MINUTE) * MINUTE,
        "pendingFor": _minutes(form, "pending", 0) * MINUTE,
        "repeatInterval": _minutes(form, "repeat", DEFAULT_REPEAT_MIN) * MINUTE,
        "filters": _filters(form, kind),
        "statistic": _statistic(form, kind),
    }
    channels: list[dict[str, Any]] = []
    fields: list[str] = []
    wanted: list[tuple[str, bool, dict[str, Any]]] = [
        ("inapp", form.checked("inapp"), {"type": "inapp"}),
        ("webhook", bool(form.value("webhook").strip()), {"url": form.value("webhook").strip()}),
        ("email", bool(_addresses(form.value("email"))), {"to": _addresses(form.value("email"))}),
    ]
    for channel, asked, target in wanted:
        if not asked:
            continue
        if channel not in available:
            form.errors[channel] = f"the {channel} channel is off on this server"
            continue
        channels.append({**target, "type": channel})
        fields.append(channel)
    data["channels"] = channels
    return data, fields


def name_errors(form: RuleForm, errors: list[FieldError], channel_fields: list[str]) -> None:
    """Put ``parse_rule``'s problems (named by JSON path) beside the form's fields."""
    for e in errors:
        name = API_NAMES.get(e.field)
        message = e.message
        if e.field.startswith("filters."):
            name = "f_" + e.field.removeprefix("filters.")
        elif e.field.startswith("channels["):
            index, _, rest = e.field.removeprefix("channels[").partition("]")
            i = int(index) if index.isdigit() else -1
            name = channel_fields[i] if 0 <= i < len(channel_fields) else "form"
            detail = rest.lstrip(".")
            message = (
                f"{detail}: {e.message}" if detail and detail not in ("url", "to") else message
            )
        if name not in LABELS:
            name = "form"
            message = f"{e.field}: {e.message}" if e.field else e.message
        form.errors.setdefault(name, message)
