"""An opt-in ``logging.Handler``: ``ERROR`` records become error reports.

>>> logging.getLogger().addHandler(ErrorLogHandler(monitor))      # doctest: +SKIP

A record with an exception (``log.exception(...)``) is reported as that exception, grouped
by its frames like any other; one without is grouped by the record's unformatted message,
so ``log.error("payment %s failed", pid)`` is one group whatever ``pid`` is. asgimon's
own loggers are never reported: a failure to record must not record itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from asgimon._validate import clean_text

from .capture import message_event

if TYPE_CHECKING:
    from asgimon.recording import Recording

_SEVERITY = {logging.CRITICAL: "critical", logging.ERROR: "high", logging.WARNING: "medium"}


def severity_of(level: int) -> str:
    for threshold in (logging.CRITICAL, logging.ERROR, logging.WARNING):
        if level >= threshold:
            return _SEVERITY[threshold]
    return "low"


class ErrorLogHandler(logging.Handler):
    """Reports records at ``level`` (default ``ERROR``) and above to the monitor."""

    def __init__(self, monitor: Recording, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.monitor = monitor

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "asgimon" or record.name.startswith("asgimon."):
            return
        try:
            self._report(record)
        except Exception:
            self.handleError(record)

    def _report(self, record: logging.LogRecord) -> None:
        context: dict[str, Any] = {
            "logger": clean_text(record.name, 200),
            "level": record.levelname,
        }
        severity = severity_of(record.levelno)
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            context["log_message"] = clean_text(record.getMessage(), 2000)
            self.monitor.capture_exception(exc, severity=severity, context=context)
            return
        monitor = self.monitor
        if not monitor.settings.error_tracking_enabled:
            return
        errors = monitor.errors
        monitor.record_quietly(
            lambda: message_event(
                record.getMessage(),
                errors.where(None),
                errors.rules,
                severity=severity,
                error_type=f"log.{record.levelname}",
                context=context,
                template=f"{record.name}:{record.msg}",
            )
        )
