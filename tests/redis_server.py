"""A private ``redis-server`` for fault tests (RELIABILITY.md, F01-F07).

Fault tests kill, pause and reconfigure Redis, so they never touch the machine's shared
server on 6379: :class:`RedisServer` runs ``redis-server --port P --bind 127.0.0.1 --save ""
--appendonly no --daemonize no`` as a child process on a free loopback port, in a temporary
directory of its own, and is always killed by :meth:`RedisServer.destroy`.

>>> server = await RedisServer.create()          # doctest: +SKIP
>>> server.kill()                                # SIGKILL: connections refused
>>> await server.start()                         # a new, empty server on the same port
>>> server.destroy()                             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .pg_cluster import free_port

REDIS_SERVER = Path(os.environ.get("ASGIMON_REDIS_SERVER", "/usr/bin/redis-server"))
SHARED_PORT = 6379  # the machine's own Redis: never started, stopped or configured here
_START_TIMEOUT_S = 10.0


def missing_binary() -> str | None:
    """Why a private server cannot be started here, or None if it can."""
    if not os.access(REDIS_SERVER, os.X_OK):
        return f"redis-server not found at {REDIS_SERVER} (set ASGIMON_REDIS_SERVER)"
    return None


@dataclass
class RedisServer:
    """One ``redis-server`` child process on 127.0.0.1:``port``, without persistence."""

    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def logfile(self) -> Path:
        return self.base / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def create(cls) -> RedisServer:
        """Start a server on a free port, in a new temporary directory."""
        base = Path(tempfile.mkdtemp(prefix="asgimon-redis-"))
        server = cls(base, free_port())
        try:
            await server.start()
        except BaseException:
            server.destroy()
            raise
        return server

    async def start(self) -> None:
        """Start a new, empty server on this port; return once it answers PING."""
        assert self.port != SHARED_PORT, "never the machine's shared Redis"
        assert self.pid is None, "already running"
        self.starts += 1
        argv = [
            str(REDIS_SERVER),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.base),
            "--logfile",
            str(self.logfile),
        ]
        self.proc = _spawn(argv)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, redis_errors.RedisError):
                if await self.command("PING", timeout=0.5):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not ready in {_START_TIMEOUT_S}s")
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash: the dataset is gone, connections are refused."""
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.proc = None

    async def restart_empty(self) -> None:
        """Kill, then start a new server (no dataset: nothing is persisted) on the same port."""
        self.kill()
        await self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and the kernel still accepts, nothing answers."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)

    def destroy(self) -> None:
        """Kill the server (paused or not) and delete its directory. Never raises."""
        try:
            self.kill()
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- admin -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def admin(
        self, *, password: str | None = None, timeout: float = 5.0
    ) -> AsyncIterator[aioredis.Redis]:
        """A client of its own (not asgimon's), closed on exit; strings decoded."""
        client = aioredis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            # One attempt per command: a test asks a dead server and must hear so at once.
            retry=Retry(NoBackoff(), 0),
        )
        try:
            yield client
        finally:
            await client.aclose()

    async def command(self, *args: Any, password: str | None = None, timeout: float = 5.0) -> Any:
        """One command on a fresh admin connection (so a password change cannot strand it)."""
        async with self.admin(password=password, timeout=timeout) as client:
            # redis-py leaves execute_command untyped; its reply is whatever the command sends.
            return await client.execute_command(*args)  # type: ignore[no-untyped-call]

    async def info(self, section: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.command("INFO", section)
        return found

    async def kill_clients(self, *, password: str | None = None) -> int:
        """``CLIENT KILL TYPE normal``: every client but this admin connection is cut off."""
        killed: int = await self.command(
            "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes", password=password
        )
        return killed

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    """Start the child in a session of its own: a Ctrl-C aimed at pytest does not reach it
    before teardown does. (Popen returns at once: it does not wait on the server.)"""
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
    )
