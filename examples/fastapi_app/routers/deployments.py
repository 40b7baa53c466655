"""Deployments: queue one (built in the background), read it, follow its log or its status."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, BackgroundTasks, HTTPException, WebSocket, WebSocketException, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.websockets import WebSocketDisconnect

from examples.fastapi_app.builds import build
from examples.fastapi_app.db import Deployment, Project, User
from examples.fastapi_app.deps import ServicesDep, SessionDep, UserDep, WebSocketUserDep
from examples.fastapi_app.progress import Follower, Update
from examples.fastapi_app.schemas import DeploymentOut, StatusOut

from .projects import owned_project

router = APIRouter(tags=["deployments"])


async def _owned(db: AsyncSession, user: User, deployment_id: str) -> Deployment | None:
    return await db.scalar(
        select(Deployment)
        .join(Project, Project.id == Deployment.project_id)
        .where(Deployment.id == deployment_id, Project.owner_id == user.id)
    )


async def owned_deployment(db: AsyncSession, user: User, deployment_id: str) -> Deployment:
    deployment = await _owned(db, user, deployment_id)
    if deployment is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no deployment {deployment_id!r}")
    return deployment


@router.post("/projects/{project_id}/deployments", status_code=status.HTTP_202_ACCEPTED)
async def deploy(
    project_id: str,
    user: UserDep,
    db: SessionDep,
    services: ServicesDep,
    background: BackgroundTasks,
) -> DeploymentOut:
    """Queue a deployment: it is built after the response, followed at its ``logs`` or
    ``/ws/deployments/{id}``."""
    project = await owned_project(db, user, project_id)
    deployment = Deployment(
        id=f"dep-{uuid.uuid4().hex[:12]}",
        project_id=project.id,
        status="queued",
        created_at=time.time(),
        finished_at=None,
        log="",
    )
    db.add(deployment)
    await db.commit()
    # Told before the response: a follower that comes at once finds the build, not a row
    # that says "queued" with nothing more to come.
    services.progress.begin(deployment.id, Update("queued", None, f"queued for {project.id}"))
    await services.monitor.record_deployment_event(
        deployment.id, "started", framework=project.framework
    )
    background.add_task(build, services, deployment.id, project.framework)
    return DeploymentOut.of(deployment)


@router.get("/deployments/{deployment_id}")
async def get_deployment(deployment_id: str, user: UserDep, db: SessionDep) -> DeploymentOut:
    return DeploymentOut.of(await owned_deployment(db, user, deployment_id))


async def _lines(follower: Follower) -> AsyncIterator[str]:
    async for update in follower.updates():
        yield update.line + "\n"


@router.get(
    "/deployments/{deployment_id}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
async def logs(
    deployment_id: str, user: UserDep, db: SessionDep, services: ServicesDep
) -> StreamingResponse:
    """The build's log, line by line as it is written while the build runs."""
    deployment = await owned_deployment(db, user, deployment_id)
    follower = services.progress.follow(deployment.id)
    if follower is None:
        # Over, perhaps since it was read: its row has the whole log now.
        await db.refresh(deployment)
        stored = deployment.log.splitlines(keepends=True)
        return StreamingResponse(iter(stored), media_type="text/plain")
    return StreamingResponse(_lines(follower), media_type="text/plain")


@router.websocket("/ws/deployments/{deployment_id}")
async def watch(
    websocket: WebSocket,
    deployment_id: str,
    user: WebSocketUserDep,
    db: SessionDep,
    services: ServicesDep,
) -> None:
    """The deployment's status at each step of its build, as JSON, until it is over."""
    deployment = await _owned(db, user, deployment_id)
    if deployment is None:
        raise WebSocketException(status.WS_1008_POLICY_VIOLATION, "no such deployment")
    follower = services.progress.follow(deployment.id)
    if follower is None:
        await db.refresh(deployment)  # over, perhaps since it was read
    # Done with the database: its connection goes back to the pool for as long as the watch.
    await db.close()
    await websocket.accept()
    try:
        if follower is None:
            last = deployment.log.splitlines()[-1:] or [deployment.status]
            update = Update(deployment.status, None, last[0])
            await websocket.send_json(_status(deployment.id, update))
        else:
            async for update in follower.updates():
                await websocket.send_json(_status(deployment.id, update))
        await websocket.close()
    except WebSocketDisconnect:
        pass  # the watcher left: nothing more to tell


def _status(deployment_id: str, update: Update) -> dict[str, object]:
    return StatusOut(
        deployment_id=deployment_id, status=update.status, phase=update.phase, line=update.line
    ).model_dump()
