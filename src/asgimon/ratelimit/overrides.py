"""Per-key limits set by an administrator, shared by every worker through storage.

An override replaces the default limit (and a tier's) of one key: a customer on a bigger
plan, or an abuser cut down to 1/minute. Endpoint limits and exemptions still apply: they
guard a resource, not a client. ``subject`` is the key as the administrator wrote it
(``user:alice``, ``key:…``, ``addr:203.0.113.7``), kept for them to recognise; the counters
only ever see ``key``, the hash the limiter uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SUBJECT_KINDS = ("user", "sub", "key", "addr")
"""What a key is made of: a user id, a JWT subject, an API key, a client address."""


@dataclass(frozen=True, slots=True)
class Override:
    key: str
    subject: str
    rate: str
    note: str = ""
    created_at: float = 0.0
    created_by: str | None = None
    expires_at: float | None = None

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Override:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})
