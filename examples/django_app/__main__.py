"""``python -m examples.django_app``: migrate, create a demo staff user, serve with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import os

import uvicorn

ITEMS = {
    "Tools": [("Hammer", 1_299), ("Saw", 2_450), ("Pliers", 899)],
    "Garden": [("Rake", 1_750), ("Hose", 3_100), ("Trowel", 650)],
    "Kitchen": [("Kettle", 2_999), ("Whisk", 450)],
}


def prepare(username: str, password: str) -> None:
    """The database migrated, a few items in it, and a staff user to sign in with."""
    import django
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    from .shop.models import Category, Item  # once the apps are loaded

    call_command("migrate", interactive=False, verbosity=0)
    if not Item.objects.exists():
        for category_name, items in ITEMS.items():
            category = Category.objects.create(name=category_name)
            for name, price in items:
                Item.objects.create(name=name, price_cents=price, category=category)
    users = get_user_model().objects
    if not users.filter(username=username).exists():
        users.create_user(username, password=password, is_staff=True)
    # Served from other threads from now on: this one's connection is of no further use.
    connections.close_all()


def main(host: str, port: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    os.environ.setdefault("ANALYTICS_STORAGE_URL", "sqlite:///asgimon-django-demo.db")
    username = os.environ.get("DJANGO_DEMO_USER", "demo")
    password = os.environ.get("DJANGO_DEMO_PASSWORD", "demo-password")
    prepare(username, password)

    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    from .asgi import application

    monitor = application.monitor
    base = f"http://{host}:{port}"
    mount = monitor.settings.mount_path
    print(f"asgimon dashboard: {base}{mount}/", flush=True)
    print(f"  sign in first:   {base}/admin/login/?next={mount}/ as {username} / {password}")
    print(f"  the shop:        {base}/ (try /items/3/, /n-plus-one/ and /boom/)")
    print(f"  storage:         {monitor.settings.storage_url}", flush=True)
    # The admin's stylesheets, as runserver would serve them; behind a real server in
    # production (or WhiteNoise), not from here.
    app = ASGIStaticFilesHandler(application)
    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        main(args.host, args.port)
