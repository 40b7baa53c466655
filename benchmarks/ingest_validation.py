"""How long ingestion takes to check a batch, against a pydantic v2 model of the same event.

``POST /api/events`` parses and validates the whole batch before writing it; this times that
step alone (``parse_body`` + ``to_events``) for a batch of completed deployments, and, when
pydantic is importable, a strict pydantic model with the same names, types, bounds and
choices (``model_validate_json``, then the event objects built from it); medians of
``--rounds``. pydantic is not a dependency of asgimon (FastAPI brings it).

    .venv/bin/python benchmarks/ingest_validation.py [--events 5000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from asgimon._validate import MAX_DURATION_MS
from asgimon.dashboard.ingest import parse_body, to_events
from asgimon.events import DEPLOYMENT_TYPES, OUTCOMES, DeploymentEvent


def batch(n: int) -> bytes:
    now = time.time()
    events = [
        {
            "kind": "deployment",
            "id": str(uuid.uuid4()),
            "projectId": "shop",
            "timestamp": datetime.fromtimestamp(now - i, UTC).isoformat(),
            "deploymentId": f"d{i}",
            "type": "completed",
            "status": "success",
            "durationMs": 1234.5,
            "framework": "nextjs",
        }
        for i in range(n)
    ]
    return json.dumps({"events": events}).encode()


def pydantic_check(n: int) -> Callable[[bytes], Any] | None:
    try:
        from typing import Annotated, Literal

        from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
    except ImportError:
        return None

    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(p.title() for p in rest)

    uuid_re = r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"
    assert {"started", "in_progress", "completed"} == DEPLOYMENT_TYPES
    assert {"success", "failure"} == OUTCOMES

    class Deployment(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True, alias_generator=camel)
        kind: Literal["deployment"]
        id: Annotated[str, Field(pattern=uuid_re)]
        project_id: Annotated[str, Field(min_length=1, max_length=128)]
        timestamp: AwareDatetime
        deployment_id: Annotated[str, Field(min_length=1, max_length=256)]
        type: Literal["started", "in_progress", "completed"]
        status: Literal["success", "failure"] | None = None
        duration_ms: Annotated[float, Field(ge=0, le=MAX_DURATION_MS)] | None = None
        framework: Annotated[str, Field(max_length=64)] | None = None

    class Body(BaseModel):
        model_config = ConfigDict(extra="forbid")
        events: Annotated[list[Deployment], Field(max_length=n)]

    def check_and_build(raw: bytes) -> list[DeploymentEvent]:
        # What ingestion needs in the end: event objects, built without checking them again.
        return [
            DeploymentEvent(
                project_id=e.project_id,
                timestamp=e.timestamp.timestamp(),
                id=e.id,
                deployment_id=e.deployment_id,
                type=e.type,
                status=e.status,
                duration_ms=e.duration_ms,
                framework=e.framework,
            )
            for e in Body.model_validate_json(raw).events
        ]

    return check_and_build


def median_ms(check: Callable[[bytes], Any], raw: bytes, rounds: int) -> float:
    check(raw)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        check(raw)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    raw = batch(args.events)

    def ours(body: bytes) -> Any:
        items = parse_body(body, max_events=args.events)
        return to_events(items, allowed=lambda _: True, max_age_s=1e9)

    variants: dict[str, Callable[[bytes], Any]] = {"asgimon": ours}
    other = pydantic_check(args.events)
    if other is not None:
        variants["pydantic"] = other
    base = None
    print(f"| check ({args.events} deployments) | median ms | events/s | vs asgimon |")
    print("|---|---:|---:|---:|")
    for name, check in variants.items():
        ms = median_ms(check, raw, args.rounds)
        base = base or ms
        print(f"| {name} | {ms:.1f} | {args.events / ms * 1e3:,.0f} | {ms / base:.2f}x |")
    if other is None:
        print("(pydantic is not installed: only asgimon's own check was timed)")


if __name__ == "__main__":
    main()
