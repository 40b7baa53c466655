"""A small Django shop served under ASGI by uvicorn, monitored by asgimon.

``python -m examples.django_app`` migrates its SQLite database, creates a demo staff user
and serves it; see ``docs/django.md``.
"""
