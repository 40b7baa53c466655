"""``/projects``: the caller's projects, and each one's deployments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from examples.fastapi_app.db import Deployment, Project, User
from examples.fastapi_app.deps import SessionDep, UserDep
from examples.fastapi_app.schemas import DeploymentOut, ProjectIn, ProjectOut

router = APIRouter(prefix="/projects", tags=["projects"])

RECENT = 3  # deployments listed with each project


async def owned_project(db: AsyncSession, user: User, project_id: str) -> Project:
    """The caller's project; another account's is as absent as one that does not exist."""
    project = await db.get(Project, project_id)
    if project is None or project.owner_id != user.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no project {project_id!r}")
    return project


def _deployments(project_id: str, limit: int) -> Select[Deployment]:
    return (
        select(Deployment)
        .where(Deployment.project_id == project_id)
        .order_by(Deployment.created_at.desc())
        .limit(limit)
    )


@router.get("")
async def list_projects(user: UserDep, db: SessionDep) -> list[ProjectOut]:
    """The caller's projects, each with its latest deployments."""
    mine = select(Project).where(Project.owner_id == user.id).order_by(Project.id)
    projects = (await db.scalars(mine)).all()
    listed = []
    for project in projects:
        # One query per project: the N+1 pattern, left in so that the dashboard's
        # performance page has one to flag (one query with a window function, or
        # ``selectinload`` on a relationship, would fetch them all at once).
        recent = (await db.scalars(_deployments(project.id, RECENT))).all()
        listed.append(ProjectOut.of(project, [DeploymentOut.of(d) for d in recent]))
    return listed


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_project(body: ProjectIn, user: UserDep, db: SessionDep) -> ProjectOut:
    if await db.get(Project, body.id) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"project {body.id!r} already exists")
    project = Project(id=body.id, owner_id=user.id, name=body.id, framework=body.framework)
    db.add(project)
    await db.commit()
    return ProjectOut.of(project)


@router.get("/{project_id}")
async def get_project(project_id: str, user: UserDep, db: SessionDep) -> ProjectOut:
    return ProjectOut.of(await owned_project(db, user, project_id))


@router.get("/{project_id}/deployments")
async def list_deployments(
    project_id: str, user: UserDep, db: SessionDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[DeploymentOut]:
    await owned_project(db, user, project_id)
    return [DeploymentOut.of(d) for d in await db.scalars(_deployments(project_id, limit))]
