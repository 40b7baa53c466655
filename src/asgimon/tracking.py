"""Context managers and decorators that time a function invocation or a build phase."""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Protocol, TypeVar

from ._validate import clean_text
from .events import BuildEvent, Event, FunctionInvocation


class QuietRecorder(Protocol):
    """Whoever records the tracked events (the Monitor), never raising into tracked code."""

    def record_quietly(self, make: Callable[[], Event]) -> Event | None: ...


F = TypeVar("F", bound=Callable[..., Any])

current_function: ContextVar[str | None] = ContextVar("asgimon_function", default=None)
"""The tracked function running now: error reports made inside it name it."""


class Tracker:
    """Times a block or a function and records one event when it ends, success or error.

    Use it as ``with``, ``async with`` or a decorator on a sync or async function; the
    recorded event never raises into the tracked code (an invalid one is dropped and counted),
    and the tracked code's exceptions propagate unchanged.
    """

    def __init__(
        self,
        monitor: QuietRecorder,
        make: Callable[[float, float, BaseException | None], Event],
        *,
        function_id: str | None = None,
        on_error: Callable[[BaseException], object] | None = None,
    ):
        self._monitor = monitor
        self._make = make
        self._function_id = function_id
        self._on_error = on_error
        # One per use in flight: a tracker entered twice (nested) resets each in turn.
        self._tokens: list[Token[str | None]] = []
        self._t0 = 0.0
        self._wall0 = 0.0

    def __enter__(self) -> Tracker:
        if self._function_id is not None:
            self._tokens.append(current_function.set(self._function_id))
        self._wall0 = time.time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._t0
        try:
            self._monitor.record_quietly(lambda: self._make(self._wall0, elapsed, exc))
            if exc is not None and isinstance(exc, Exception) and self._on_error is not None:
                self._on_error(exc)  # still inside: the report names the function
        finally:
            if self._tokens:
                token = self._tokens.pop()
                # One tracker shared by concurrent tasks: each has its own context, where
                # another's token cannot be reset; the task's context ends with it anyway.
                with contextlib.suppress(ValueError):
                    current_function.reset(token)

    async def __aenter__(self) -> Tracker:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _fresh(self) -> Tracker:
        return Tracker(
            self._monitor, self._make, function_id=self._function_id, on_error=self._on_error
        )

    def __call__(self, fn: F) -> F:
        fresh = self._fresh
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with fresh():
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with fresh():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def function_tracker(
    monitor: QuietRecorder,
    function_id: str,
    *,
    project_id: str,
    deployment_id: str | None,
    cold_start: bool,
    memory_mb: float | None,
    scrub: Callable[[str], str] = lambda text: text,
    on_error: Callable[[BaseException], object] | None = None,
) -> Tracker:
    def make(wall0: float, elapsed: float, exc: BaseException | None) -> Event:
        return FunctionInvocation(
            project_id=project_id,
            timestamp=wall0,
            function_id=function_id,
            deployment_id=deployment_id,
            status="error" if exc is not None else "success",
            duration_ms=elapsed * 1000.0,
            cold_start=cold_start,
            memory_mb=memory_mb,
            error_type=type(exc).__name__ if exc is not None else None,
            error_message=clean_text(scrub(str(exc)), 2000) if exc is not None else None,
        )

    return Tracker(monitor, make, function_id=function_id, on_error=on_error)


def build_phase_tracker(
    monitor: QuietRecorder,
    deployment_id: str,
    phase: str,
    *,
    project_id: str,
    framework: str | None,
) -> Tracker:
    def make(wall0: float, elapsed: float, exc: BaseException | None) -> Event:
        return BuildEvent(
            project_id=project_id,
            timestamp=wall0,
            deployment_id=deployment_id,
            phase=phase,
            start_time=wall0,
            end_time=wall0 + elapsed,
            status="failure" if exc is not None else "success",
            framework=framework,
        )

    return Tracker(monitor, make)
