"""The dashboard sub-application mounted at ``/analytics``."""

from __future__ import annotations

from .app import create_dashboard

__all__ = ["create_dashboard"]
