"""What the routes depend on: the app's services, a database session, the caller's account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Security, WebSocketException, status
from fastapi.security import APIKeyHeader
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.authentication import AuthCredentials, SimpleUser
from starlette.requests import HTTPConnection

from asgimon import Monitor

from .db import Database, User, key_digest
from .progress import Progress

API_KEY_HEADER = "X-API-Key"


@dataclass
class Services:
    """What the routes share, one set per app (on ``app.state.services``)."""

    monitor: Monitor
    database: Database
    progress: Progress = field(default_factory=Progress)
    warm_functions: set[str] = field(default_factory=set)
    """Functions invoked since the process started: their next invocation is warm."""


def services(conn: HTTPConnection) -> Services:
    found: Services = conn.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


async def session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.database.sessions() as db:
        yield db


# Closed when the route returns, not once the response is sent: a log stream or a websocket
# would otherwise hold a pooled connection for as long as it lasts.
SessionDep = Annotated[AsyncSession, Depends(session, scope="function")]

api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An account's API key (the demo accounts' are `demo-key-alice`, `-bob`, `-carol`"
    " and `-dana`).",
)


async def _account(conn: HTTPConnection, key: str | None, db: AsyncSession) -> User | None:
    user = None
    if key:
        user = await db.scalar(select(User).where(User.key_digest == key_digest(key)))
    if user is not None:
        # Where Starlette's AuthenticationMiddleware would put the user: ``request.user``
        # reads it, and asgimon records its id with the request and any error it raises.
        conn.scope["user"] = SimpleUser(user.id)
        conn.scope["auth"] = AuthCredentials(["authenticated"])
    return user


async def current_user(
    conn: HTTPConnection, key: Annotated[str | None, Security(api_key)], db: SessionDep
) -> User:
    user = await _account(conn, key, db)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"a valid {API_KEY_HEADER} header is required",
            headers={"WWW-Authenticate": "APIKey"},
        )
    return user


async def websocket_user(
    conn: HTTPConnection, key: Annotated[str | None, Security(api_key)], db: SessionDep
) -> User:
    # Raised before the handshake is accepted: the client is refused with an HTTP 403.
    user = await _account(conn, key, db)
    if user is None:
        raise WebSocketException(status.WS_1008_POLICY_VIOLATION, "a valid API key is required")
    return user


UserDep = Annotated[User, Depends(current_user)]
WebSocketUserDep = Annotated[User, Depends(websocket_user)]
