"""The ASGI middleware and what it needs to turn requests into events."""

from __future__ import annotations

from asgimon.pipeline.records import OTHER, UNMATCHED, ApiCallBuilder, route_template

from .asgi import AsgimonMiddleware

__all__ = ["OTHER", "UNMATCHED", "ApiCallBuilder", "AsgimonMiddleware", "route_template"]
