"""The platform's own database: users and their API keys, projects, deployments.

SQLAlchemy's asyncio engine on a SQLite file (aiosqlite), instrumented by asgimon so that
every statement a request runs is timed under the request's endpoint.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ForeignKey, String, Text, event, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asgimon.plugins.sqlalchemy import instrument

DATABASE_URL = "sqlite+aiosqlite:///platform.db"
"""Where the platform keeps its data unless told otherwise: a file in the working directory."""


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # The key's digest only: a copy of the database opens no account. A plain SHA-256 is
    # enough for keys this long and random (a password would need a slow hash).
    key_digest: Mapped[str] = mapped_column(String(64), unique=True)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    framework: Mapped[str] = mapped_column(String(32))


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))  # queued, building, ready or failed
    created_at: Mapped[float]
    finished_at: Mapped[float | None]
    log: Mapped[str] = mapped_column(Text, default="")


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Account:
    """A demo account, made at start-up so that the API can be tried at once."""

    user_id: str
    name: str
    api_key: str
    projects: tuple[tuple[str, str], ...]  # (project id, framework)


DEMO_ACCOUNTS = (
    Account(
        "alice",
        "Alice Martin",
        "demo-key-alice",
        (
            ("acme-web", "nextjs"),
            ("acme-api", "fastapi"),
            ("acme-docs", "vite"),
            ("acme-blog", "nextjs"),
            ("acme-admin", "django"),
            ("acme-status", "vite"),
            ("acme-shop", "nextjs"),
            ("acme-mobile-api", "fastapi"),
        ),
    ),
    Account(
        "bob",
        "Bob Okafor",
        "demo-key-bob",
        (
            ("globex-site", "vite"),
            ("globex-portal", "nextjs"),
            ("globex-billing", "django"),
            ("globex-search", "fastapi"),
            ("globex-landing", "vite"),
            ("globex-careers", "nextjs"),
        ),
    ),
    Account("carol", "Carol Nguyen", "demo-key-carol", (("initech-wiki", "django"),)),
    Account("dana", "Dana Levi", "demo-key-dana", ()),
)


SEEDED_LOG = "".join(f"{phase}: done\n" for phase in ("clone", "install", "build")) + "ready\n"


class Database:
    """The engine and its sessions; :meth:`create` makes the tables and the demo accounts.

    >>> database = Database("sqlite+aiosqlite:///platform.db")
    >>> async with database.sessions() as session: ...          # doctest: +SKIP
    """

    def __init__(self, url: str = DATABASE_URL) -> None:
        self.engine = create_async_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        instrument(self.engine)
        # Not expired on commit: a row read in a request is still readable after its commit,
        # without a lazy load (which asyncio sessions cannot do implicitly).
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def create(self) -> None:
        """The tables, and the demo accounts with two deployments per project."""
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with self.sessions.begin() as session:
            # A build the last run left unfinished died with it: nothing will finish it now.
            unfinished = Deployment.status.in_(("queued", "building"))
            interrupted = {"status": "failed", "finished_at": time.time(), "log": "interrupted\n"}
            await session.execute(update(Deployment).where(unfinished).values(interrupted))
            for account in DEMO_ACCOUNTS:
                if await session.get(User, account.user_id) is None:
                    _add_account(session, account)

    async def close(self) -> None:
        await self.engine.dispose()


def _add_account(session: AsyncSession, account: Account) -> None:
    session.add(User(id=account.user_id, name=account.name, key_digest=key_digest(account.api_key)))
    now = time.time()
    for n, (project_id, framework) in enumerate(account.projects):
        session.add(
            Project(id=project_id, owner_id=account.user_id, name=project_id, framework=framework)
        )
        for age in (3, 1):
            at = now - age * 86_400 - n * 600
            session.add(
                Deployment(
                    id=f"dep-{project_id}-{age}",
                    project_id=project_id,
                    status="ready",
                    created_at=at,
                    finished_at=at + 95,
                    log=SEEDED_LOG,
                )
            )


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL: requests keep reading while a build writes its deployment's row.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
