"""Private PostgreSQL clusters and a TCP fault proxy, for fault tests (RELIABILITY.md).

Fault tests kill, pause and restart PostgreSQL, so they never touch the machine's shared
server: :class:`PgCluster` runs ``initdb`` and ``pg_ctl`` (as the ``postgres`` user when we
are root, since ``initdb`` refuses root) on a free loopback port with a data directory of
its own. :class:`FaultProxy` sits between a client and a server on loopback and passes
traffic, black-holes it, delays it or resets connections, switchable at any moment.

>>> cluster = PgCluster.create()                  # doctest: +SKIP
>>> url = await cluster.create_database("f08")    # doctest: +SKIP
>>> await cluster.restart()                       # doctest: +SKIP
>>> cluster.destroy()                             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs; the override list is not ours
import psutil
import pytest

PG_BIN = Path(os.environ.get("ASGIMON_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
_START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def skip_or_fail(reason: str) -> None:
    """Skip with a one-line reason, or fail when CI requires its services."""
    if os.environ.get("ASGIMON_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (ASGIMON_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def missing_binaries() -> str | None:
    """Why a private cluster cannot be started here, or None if it can."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not os.access(PG_BIN / tool, os.X_OK):
            return f"PostgreSQL binaries not found in {PG_BIN} (set ASGIMON_PG_BIN)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot run initdb as the postgres user"
    return None


def _as_postgres(argv: Sequence[str]) -> list[str]:
    """``initdb`` and ``postgres`` refuse to run as root: drop to the postgres user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *argv]
    return list(argv)


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, PG_USER, PG_USER)


@dataclass
class PgCluster:
    """One ``initdb`` cluster on 127.0.0.1:``port``, trust auth, superuser ``postgres``.

    Fast to start (``fsync=off``, small buffers) and fast to crash (``pg_ctl -m immediate``).
    ``synchronous_commit`` stays on: with ``fsync=off`` a killed server still keeps every
    commit it acknowledged (the OS holds the WAL), so "0 lost" is asgimon's doing alone.
    """

    base: Path
    port: int
    max_connections: int

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def sockets(self) -> Path:
        return self.base / "sock"

    @property
    def logfile(self) -> Path:
        return self.base / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return self.url(database)

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def create(cls, *, max_connections: int = 20) -> PgCluster:
        """``initdb`` a new cluster in a new temporary directory and start it.

        Not under pytest's ``tmp_path``: that is private to root, and the server runs as
        ``postgres``. :meth:`destroy` stops the server and removes the directory.
        """
        base = Path(tempfile.mkdtemp(prefix="asgimon-pg-"))
        cluster = cls(base, free_port(), max_connections)
        try:
            cluster._initdb()
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def _initdb(self) -> None:
        self.sockets.mkdir()
        for path in (self.base, self.sockets):
            _chown(path)
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                PG_USER,
                "--no-sync",
                "--no-instructions",
                "-E",
                "UTF8",
            ]
        )
        settings = {
            "port": self.port,
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.sockets}'",
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "'16MB'",
            "max_connections": self.max_connections,
            # Every client here is a superuser: reserved slots would make "full" unreachable.
            "superuser_reserved_connections": 0,
            "max_wal_senders": 0,
            "wal_level": "minimal",
            "autovacuum": "off",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %a '",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# asgimon fault tests\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _run(self, argv: Sequence[str], timeout: float = 60) -> None:
        done = subprocess.run(
            _as_postgres(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({done.returncode}): {done.stdout}{done.stderr}"
                f"\n{self.log_tail()}"
            )

    def _pg_ctl(self, *args: str) -> list[str]:
        return [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), *args]

    def start(self) -> None:
        self._run(self._pg_ctl("-w", "-t", str(_START_TIMEOUT_S), "start"))

    def stop(self, mode: str = "immediate") -> None:
        """Stop now (for teardown: resumes a paused server first, never raises)."""
        self.resume()
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(self._pg_ctl("-w", "-t", "20", "-m", mode, "stop"), timeout=30)
        pid = self.postmaster_pid()
        if pid is not None:  # pg_ctl could not stop it: make sure nothing outlives the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        """Stop the server (immediately) and delete its files."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    async def _pg_ctl_async(self, *args: str, timeout: float = 40) -> None:
        proc = await asyncio.create_subprocess_exec(
            *_as_postgres(self._pg_ctl(*args)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)}: {out.decode()}\n{self.log_tail()}")

    async def restart(self, mode: str = "immediate") -> None:
        """``pg_ctl -m MODE restart``, returning once the server accepts connections."""
        await self._pg_ctl_async("-w", "-t", str(_START_TIMEOUT_S), "-m", mode, "restart")

    async def stop_async(self, mode: str = "fast") -> None:
        await self._pg_ctl_async("-w", "-t", "20", "-m", mode, "stop")

    async def start_async(self) -> None:
        await self._pg_ctl_async("-w", "-t", str(_START_TIMEOUT_S), "start")

    # -- pausing (F11) -----------------------------------------------------------------

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        pid = int(first)
        return pid if psutil.pid_exists(pid) else None

    def _processes(self) -> list[psutil.Process]:
        pid = self.postmaster_pid()
        if pid is None:
            return []
        try:
            postmaster = psutil.Process(pid)
            return [postmaster, *postmaster.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pause(self) -> None:
        """SIGSTOP the postmaster and every backend: connections open, nothing answers."""
        for proc in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        for proc in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)

    # -- SQL ---------------------------------------------------------------------------

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        """An admin connection (application_name ``pgfault``, so asgimon's are told apart)."""
        return await asyncpg.connect(
            self.dsn(database), timeout=5, server_settings={"application_name": "pgfault"}
        )

    async def execute(self, sql: str, *args: Any, database: str = "postgres") -> None:
        conn = await self.connect(database)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close(timeout=5)

    async def fetch(self, sql: str, *args: Any, database: str = "postgres") -> list[Any]:
        conn = await self.connect(database)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close(timeout=5)

    async def create_database(self, name: str) -> str:
        """A fresh, empty database; its asgimon URL."""
        await self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    async def terminate_backends(self, application_name: str = "asgimon") -> int:
        """F09: ``pg_terminate_backend`` every backend of ``application_name``; how many."""
        rows = await self.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND pid <> pg_backend_pid()",
            application_name,
        )
        return sum(1 for (ok,) in rows if ok)

    async def backends(self, application_name: str = "asgimon") -> int:
        rows = await self.fetch(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            application_name,
        )
        return int(rows[0][0])

    async def wait_backends_gone(self, application_name: str, timeout: float) -> float:
        """Seconds until no backend of ``application_name`` is left (a client gone is noticed
        by its backend only when it next reads)."""

        async def gone() -> bool:
            return await self.backends(application_name) == 0

        return await wait_until(gone, timeout)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# -- the TCP fault proxy --------------------------------------------------------------------


class ProxyMode(enum.Enum):
    PASS = "pass"  # forward both ways
    BLACKHOLE = "blackhole"  # accept and read everything, forward and answer nothing
    LATENCY = "latency"  # forward each chunk after ``latency`` seconds
    RESET = "reset"  # close every connection with RST (SO_LINGER 0), new ones at once


@dataclass
class FaultProxy:
    """A loopback TCP proxy to ``target_port`` whose behaviour can change at any moment.

    >>> async with FaultProxy(5432) as proxy:           # doctest: +SKIP
    ...     proxy.mode = ProxyMode.BLACKHOLE
    """

    target_port: int
    target_host: str = "127.0.0.1"
    latency: float = 0.0
    port: int = 0
    connections: int = 0
    _mode: ProxyMode = ProxyMode.PASS
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def mode(self) -> ProxyMode:
        return self._mode

    @mode.setter
    def mode(self, mode: ProxyMode) -> None:
        self._mode = mode
        self._changed.set()
        self._changed = asyncio.Event()
        if mode is ProxyMode.RESET:
            for writer in list(self._writers):
                _reset(writer)

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            _reset(writer)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_w)
        server_w: asyncio.StreamWriter | None = None
        try:
            if self._mode is ProxyMode.RESET:
                return
            if self._mode is ProxyMode.BLACKHOLE:
                await self._swallow(client_r)
                return
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(server_w)
            pumps = [
                asyncio.create_task(self._pump(client_r, server_w)),
                asyncio.create_task(self._pump(server_r, client_w)),
            ]
            self._tasks.update(pumps)
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                self._tasks.difference_update(pumps)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_w, server_w):
                if writer is not None:
                    self._writers.discard(writer)
                    if self._mode is ProxyMode.RESET:
                        _reset(writer)
                    else:
                        writer.close()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            while self._mode is ProxyMode.BLACKHOLE:
                await self._changed.wait()  # hold the bytes: the peer hears nothing
            if self._mode is ProxyMode.RESET:
                return
            if self._mode is ProxyMode.LATENCY and self.latency:
                await asyncio.sleep(self.latency)
            writer.write(chunk)
            await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, not FIN: ``SO_LINGER`` on with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> float:
    """Await ``predicate()`` (sync or async) until truthy; the seconds it took."""
    start = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
