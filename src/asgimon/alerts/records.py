"""What the alert engine keeps in storage: versioned records and an append-only history.

Rules, their states and silences are :class:`Record` s: a JSON body under a kind and an id,
with a version that every write raises by one. A write may be conditional on the version
read (``expect``), which is how workers agree on a transition: of two workers that saw a
rule cross its threshold, one writes "firing" and notifies, the other finds the version
moved and does nothing. The history (every transition, every delivery attempt's outcome,
the in-app notifications) is only ever appended to, idempotent on each entry's id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RULE = "rule"
STATE = "state"
SILENCE = "silence"
RECORD_KINDS = (RULE, STATE, SILENCE)

TRANSITION = "transition"
DELIVERY = "delivery"
INAPP = "inapp"
HISTORY_KINDS = (TRANSITION, DELIVERY, INAPP)

MAX_RACES = 8
"""Conditional writes of one record tried before giving up: each lost race reads again."""


@dataclass(slots=True)
class Record:
    kind: str
    id: str
    project_id: str
    body: dict[str, Any]
    version: int = 0
    """0 for a record not yet stored; each write stores the held version plus one."""
    updated_at: float = 0.0


@dataclass(slots=True)
class HistoryEntry:
    id: str
    project_id: str
    rule_id: str
    at: float
    kind: str
    body: dict[str, Any] = field(default_factory=dict)
