"""asgimon: monitoring, analytics, error tracking, alerting and rate limiting for ASGI apps.

>>> from asgimon import Monitor
>>> monitor = Monitor.from_env()
>>> app = monitor.wrap(app)            # doctest: +SKIP
"""

from __future__ import annotations

from .dashboard.auth import AuthHook, Principal
from .errors import (
    AsgimonError,
    ConfigError,
    FieldError,
    InvalidEventError,
    StorageError,
    StorageFull,
    StorageRejected,
    StorageUnavailable,
)
from .events import (
    ApiCall,
    BuildEvent,
    DeploymentEvent,
    DomainEvent,
    ErrorEvent,
    Event,
    FunctionInvocation,
    RateLimitEvent,
)
from .middleware import AsgimonMiddleware
from .monitor import Monitor
from .pipeline.recorder import Recorder, RecorderStats
from .pipeline.sinks import Sink, Subscription
from .rollups import Rollup
from .sampling import RawSampling
from .settings import Settings
from .storage import MemoryStorage, Storage, WriteResult, storage_from_url

__version__ = "0.1.0"

__all__ = [
    "ApiCall",
    "AsgimonError",
    "AsgimonMiddleware",
    "AuthHook",
    "BuildEvent",
    "ConfigError",
    "DeploymentEvent",
    "DomainEvent",
    "ErrorEvent",
    "Event",
    "FieldError",
    "FunctionInvocation",
    "InvalidEventError",
    "MemoryStorage",
    "Monitor",
    "Principal",
    "RateLimitEvent",
    "RawSampling",
    "Recorder",
    "RecorderStats",
    "Rollup",
    "Settings",
    "Sink",
    "Storage",
    "StorageError",
    "StorageFull",
    "StorageRejected",
    "StorageUnavailable",
    "Subscription",
    "WriteResult",
    "storage_from_url",
]
