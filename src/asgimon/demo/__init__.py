"""The demo ``asgimon demo`` serves: a small app with synthetic traffic and a week of history.

It ships inside the package so that it runs from an installed wheel; it needs a server and
an HTTP client, ``pip install 'asgimon[demo]'`` (``asgimon[all]`` includes them).
"""

from __future__ import annotations

from .app import create_app
from .server import serve

__all__ = ["create_app", "serve"]
