"""The API's request and response bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .db import Deployment, Project

Framework = Literal["nextjs", "vite", "django", "fastapi"]


class DeploymentOut(BaseModel):
    id: str
    project_id: str
    status: str
    created_at: float
    finished_at: float | None

    @classmethod
    def of(cls, row: Deployment) -> DeploymentOut:
        return cls(
            id=row.id,
            project_id=row.project_id,
            status=row.status,
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


class ProjectIn(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$", examples=["acme-landing"])
    framework: Framework


class ProjectOut(BaseModel):
    id: str
    name: str
    framework: str
    recent_deployments: list[DeploymentOut] = []

    @classmethod
    def of(cls, row: Project, recent: list[DeploymentOut] | None = None) -> ProjectOut:
        return cls(
            id=row.id, name=row.name, framework=row.framework, recent_deployments=recent or []
        )


class StatusOut(BaseModel):
    """What a websocket watching a deployment is sent at each step."""

    deployment_id: str
    status: str
    phase: str | None
    line: str


class CheckoutIn(BaseModel):
    plan: Literal["pro", "team"] = "pro"


class Invocation(BaseModel):
    function: str
    result: dict[str, object]
