"""An alert rule: what it watches, when it fires, whom it tells; read from JSON and checked.

:func:`parse_rule` reads a rule from the API's camelCase JSON and reports every bad field at
once, as :class:`~asgimon.errors.FieldError` s named by their JSON path (``threshold``,
``channels[1].url``), so a bad rule is refused whole and nothing is stored. A PATCH reads
the same way over the rule it changes.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from asgimon._validate import project_id_problem
from asgimon.errors import FieldError
from asgimon.events import SEVERITIES

from .channels import Channel
from .records import RULE, Record
from .types import EVENT, FILTERS, RULE_TYPES, STATISTICS, WINDOW, RuleType

MAX_NAME = 200
MAX_CHANNELS = 10
MAX_FILTER = 300
MIN_WINDOW_S = 60
MAX_WINDOW_S = 30 * 86_400
MAX_PENDING_S = 86_400
MIN_REPEAT_S = 60
DEFAULT_REPEAT_S = 3600
MAX_THRESHOLD = 1e12
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "WS"})

FIELDS = (
    "name",
    "type",
    "threshold",
    "window",
    "pendingFor",
    "repeatInterval",
    "enabled",
    "channels",
    "filters",
    "statistic",
)
"""What a client may set; ``projectId`` too on creation."""


@dataclass(slots=True)
class AlertRule:
    id: str
    project_id: str
    name: str
    type: str
    threshold: float
    window: int
    """Seconds: the span a window rule measures, or the quiet time that resolves an event rule."""
    pending_for: int = 0
    """Seconds a window rule must stay over its threshold before it fires."""
    repeat_interval: int = DEFAULT_REPEAT_S
    """Seconds between two notifications while it keeps firing."""
    enabled: bool = True
    channels: list[dict[str, Any]] = field(default_factory=list)
    filters: dict[str, str] = field(default_factory=dict)
    statistic: str = "avg"
    created_at: float = 0.0
    created_by: str | None = None
    version: int = 0

    @property
    def kind(self) -> RuleType:
        return RULE_TYPES[self.type]

    @property
    def is_event_rule(self) -> bool:
        return self.kind.mode == EVENT

    def to_json(self, *, secrets: bool = True) -> dict[str, Any]:
        channels = self.channels
        if not secrets:
            channels = [
                {k: ("(hidden)" if k == "secret" else v) for k, v in c.items()} for c in channels
            ]
        return {
            "id": self.id,
            "projectId": self.project_id,
            "name": self.name,
            "type": self.type,
            "mode": self.kind.mode,
            "threshold": self.threshold,
            "unit": self.kind.unit,
            "window": self.window,
            "pendingFor": self.pending_for,
            "repeatInterval": self.repeat_interval,
            "enabled": self.enabled,
            "channels": [dict(c) for c in channels],
            "filters": dict(self.filters),
            "statistic": self.statistic,
            "createdAt": self.created_at,
            "createdBy": self.created_by,
            "version": self.version,
        }

    def to_record(self) -> Record:
        body = self.to_json()
        for derived in ("id", "projectId", "mode", "unit", "version"):
            del body[derived]
        return Record(RULE, self.id, self.project_id, body, self.version)

    @classmethod
    def from_record(cls, record: Record) -> AlertRule:
        b = record.body
        return cls(
            id=record.id,
            project_id=record.project_id,
            name=b["name"],
            type=b["type"],
            threshold=float(b["threshold"]),
            window=int(b["window"]),
            pending_for=int(b["pendingFor"]),
            repeat_interval=int(b["repeatInterval"]),
            enabled=bool(b["enabled"]),
            channels=list(b["channels"]),
            filters=dict(b["filters"]),
            statistic=b.get("statistic", "avg"),
            created_at=float(b.get("createdAt", 0.0)),
            created_by=b.get("createdBy"),
            version=record.version,
        )


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _seconds(
    data: Mapping[str, Any], name: str, low: int, high: int, errs: list[FieldError]
) -> int:
    v = data[name]
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
        errs.append(FieldError(name, f"must be a whole number of seconds from {low} to {high}"))
        return low
    return v


def _filters(raw: Any, kind: RuleType, errs: list[FieldError]) -> dict[str, str]:
    if not isinstance(raw, dict):
        errs.append(FieldError("filters", "must be an object"))
        return {}
    out: dict[str, str] = {}
    for key, value in raw.items():
        path = f"filters.{key}"
        if key not in FILTERS or key not in kind.filters:
            allowed = ", ".join(kind.filters) or "none"
            errs.append(FieldError(path, f"is not a filter of {kind.name} (allowed: {allowed})"))
            continue
        if (
            not isinstance(value, str)
            or not 0 < len(value) <= MAX_FILTER
            or not value.isprintable()
        ):
            errs.append(FieldError(path, f"must be a text of 1 to {MAX_FILTER} characters"))
            continue
        if key == "method" and value.upper() not in METHODS:
            errs.append(FieldError(path, "must be one of " + ", ".join(sorted(METHODS))))
            continue
        if key == "severity" and value not in SEVERITIES:
            errs.append(FieldError(path, "must be one of " + ", ".join(sorted(SEVERITIES))))
            continue
        out[key] = value.upper() if key == "method" else value
    return out


def _channels(
    raw: Any, available: Mapping[str, Channel], errs: list[FieldError]
) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) > MAX_CHANNELS:
        errs.append(FieldError("channels", f"must be a list of at most {MAX_CHANNELS} channels"))
        return []
    out = []
    for i, item in enumerate(raw):
        path = f"channels[{i}]"
        if not isinstance(item, dict):
            errs.append(FieldError(path, 'must be an object such as {"type": "email", "to": …}'))
            continue
        name = item.get("type")
        channel = available.get(name) if isinstance(name, str) else None
        if channel is None:
            names = ", ".join(sorted(available)) or "none is enabled"
            errs.append(FieldError(f"{path}.type", f"must name a channel ({names})"))
            continue
        target = {k: v for k, v in item.items() if k not in ("type", "disabled")}
        normal, problems = channel.validate(target)
        errs.extend(FieldError(f"{path}.{p.field}", p.message) for p in problems)
        disabled = item.get("disabled", False)
        if not isinstance(disabled, bool):
            errs.append(FieldError(f"{path}.disabled", "must be true or false"))
        entry = {"type": name, **normal}
        if disabled:
            entry["disabled"] = True
        out.append(entry)
    return out


def parse_rule(
    data: Any,
    available: Mapping[str, Channel],
    *,
    base: AlertRule | None = None,
    project_id: str | None = None,
) -> tuple[AlertRule | None, list[FieldError]]:
    """The rule ``data`` describes (over ``base`` for a change), or every problem with it.

    Fields left out take the type's defaults on creation and the base's values on a change.
    """
    if not isinstance(data, dict):
        return None, [FieldError("", "must be a JSON object")]
    errs: list[FieldError] = []
    allowed = set(FIELDS) | ({"projectId"} if base is None else set())
    errs.extend(FieldError(k, "is not a field of an alert rule") for k in data if k not in allowed)

    type_name = data.get("type", base.type if base else None)
    kind = RULE_TYPES.get(type_name) if isinstance(type_name, str) else None
    if kind is None:
        errs.append(FieldError("type", "must be one of " + ", ".join(sorted(RULE_TYPES))))
        return None, errs
    changed_type = base is not None and type_name != base.type
    fresh = base is None or changed_type

    def pick(name: str, default: Any) -> Any:
        if name in data:
            return data[name]
        return default if fresh or base is None else _base_value(base, name)

    merged = {
        "name": pick("name", None),
        "threshold": pick("threshold", kind.threshold),
        "window": pick("window", kind.window),
        "pendingFor": pick("pendingFor", 0),
        "repeatInterval": pick("repeatInterval", DEFAULT_REPEAT_S),
        "enabled": pick("enabled", True),
        "channels": pick("channels", []),
        "filters": pick("filters", {}),
        "statistic": pick("statistic", "avg"),
    }
    if base is not None and changed_type:
        for keep in ("name", "enabled", "channels"):
            if keep not in data:
                merged[keep] = _base_value(base, keep)

    name = merged["name"]
    if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_NAME or not name.isprintable():
        errs.append(FieldError("name", f"must be a text of 1 to {MAX_NAME} characters"))
        name = ""
    threshold = merged["threshold"]
    if not _number(threshold) or not 0 <= threshold <= MAX_THRESHOLD:
        errs.append(FieldError("threshold", f"must be a number from 0 to {MAX_THRESHOLD:g}"))
        threshold = kind.threshold
    window = _seconds(merged, "window", MIN_WINDOW_S, MAX_WINDOW_S, errs)
    if kind.mode == WINDOW and window % 60:
        errs.append(FieldError("window", "must be a whole number of minutes (in seconds)"))
    pending = _seconds(merged, "pendingFor", 0, MAX_PENDING_S, errs)
    if kind.mode == EVENT and pending:
        errs.append(
            FieldError("pendingFor", "applies to window rules only: an event fires as it comes")
        )
    repeat = _seconds(merged, "repeatInterval", MIN_REPEAT_S, MAX_WINDOW_S, errs)
    if not isinstance(merged["enabled"], bool):
        errs.append(FieldError("enabled", "must be true or false"))
    statistic = merged["statistic"]
    if statistic not in STATISTICS or (statistic != "avg" and not kind.statistic):
        choices = ", ".join(STATISTICS) if kind.statistic else "avg"
        errs.append(FieldError("statistic", f"must be one of {choices} for {kind.name}"))
    filters = _filters(merged["filters"], kind, errs)
    channels = _channels(merged["channels"], available, errs)

    project = project_id if base is None else base.project_id
    if base is None and project is None:
        raw_project = data.get("projectId")
        if raw_project is None:
            errs.append(FieldError("projectId", "is required"))
        elif (problem := project_id_problem(raw_project)) is not None:
            errs.append(FieldError("projectId", problem))
        project = raw_project if isinstance(raw_project, str) else ""
    if errs:
        return None, errs
    rule = AlertRule(
        id=base.id if base else str(uuid.uuid4()),
        project_id=str(project),
        name=name.strip(),
        type=kind.name,
        threshold=float(threshold),
        window=window,
        pending_for=pending,
        repeat_interval=repeat,
        enabled=bool(merged["enabled"]),
        channels=channels,
        filters=filters,
        statistic=str(statistic),
        created_at=base.created_at if base else 0.0,
        created_by=base.created_by if base else None,
        version=base.version if base else 0,
    )
    return rule, []


def _base_value(base: AlertRule, name: str) -> Any:
    return base.to_json()[name]
