"""SQLAlchemy query timing: every statement an engine runs inside a request, timed.

>>> from asgimon.plugins.sqlalchemy import instrument
>>> engine = create_async_engine("postgresql+asyncpg://…")     # doctest: +SKIP
>>> instrument(engine)                                         # doctest: +SKIP

Two listeners on the engine's ``before_cursor_execute`` and ``after_cursor_execute`` events
read the clock around each cursor execution and hand the statement and its duration to
:func:`~asgimon.plugins.queries.record_query`; an ``executemany`` is one execution. An
:class:`~sqlalchemy.ext.asyncio.AsyncEngine` is instrumented through its ``sync_engine``,
where its events fire (in a greenlet that carries the request's context). Outside a recorded
request the listeners read no clock and record nothing. A statement that fails is timed
up to its error (``handle_error``), and its exception goes on unchanged. A statement costs
about 3.8 µs more instrumented (see :mod:`asgimon.plugins.queries` for the measurement).
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from asgimon.context import current

from .queries import record_query

# The statement's start, kept on its execution context (one per statement): the
# connection's ``info`` would do too, but it is several property hops away, and in the
# execute path two reads of it cost a microsecond.
_STARTED = "_asgimon_started"


def _before(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    # No context: an internal statement of the dialect (first connect), not the app's.
    if context is not None and current() is not None:
        setattr(context, _STARTED, perf_counter())


def _record(conn: Connection, statement: str, started: float) -> None:
    duration_ms = (perf_counter() - started) * 1000.0
    record_query(statement, duration_ms, database=conn.engine.url.database or "")


def _after(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    # Taken, not read: an error later, while the rows are read, is not a second execution.
    started = None if context is None else context.__dict__.pop(_STARTED, None)
    if started is not None:
        _record(conn, statement, started)


def _failed(exception_context: ExceptionContext) -> None:
    # A statement that failed took its time too: timed up to its error, as Django's are.
    conn, statement = exception_context.connection, exception_context.statement
    context = exception_context.execution_context
    started = None if context is None else context.__dict__.pop(_STARTED, None)
    if conn is not None and statement is not None and started is not None:
        _record(conn, statement, started)


_LISTENERS = (
    ("before_cursor_execute", _before),
    ("after_cursor_execute", _after),
    ("handle_error", _failed),
)


def _sync(engine: Engine | AsyncEngine) -> Engine:
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


def instrument(engine: Engine | AsyncEngine) -> None:
    """Time every statement ``engine`` runs inside a recorded request (see the module).

    Instrumenting an engine twice is instrumenting it once. The statements are told apart
    per database by the engine's database name.
    """
    sync = _sync(engine)
    for name, fn in _LISTENERS:
        if not event.contains(sync, name, fn):
            event.listen(sync, name, fn)


def uninstrument(engine: Engine | AsyncEngine) -> None:
    """Stop timing ``engine``'s statements (nothing happens if it was not instrumented)."""
    sync = _sync(engine)
    for name, fn in _LISTENERS:
        if event.contains(sync, name, fn):
            event.remove(sync, name, fn)
