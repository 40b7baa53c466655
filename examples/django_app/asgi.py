"""The shop's ASGI application, under asgimon: ``uvicorn examples.django_app.asgi:application``.

The database must be migrated first; ``python -m examples.django_app`` does that, then
serves this.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from asgimon.plugins.django import monitored

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
application = monitored(get_asgi_application())
