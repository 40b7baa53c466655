"""A third party's channel, installed as a package with an ``asgimon.channels`` entry point,
is found and used; one that fails to load is left out and the host starts."""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from asgimon import Settings
from asgimon.alerts.channels import load_channels

from .alerting import open_shop

PAGER = """
from asgimon.alerts.channels import Delivery
from asgimon.errors import FieldError

SENT = []


class Pager:
    name = "pager"

    def validate(self, target):
        service = target.get("service")
        if not isinstance(service, str) or not service:
            return {}, [FieldError("service", "is required")]
        return {"service": service}, []

    async def send(self, notification, target):
        SENT.append((target["service"], notification.status, notification.rule_name))
        return Delivery(ok=True, attempts=1)

    async def aclose(self):
        return None


def channel(settings):
    return Pager()


def broken(settings):
    raise RuntimeError("this plugin cannot start")
"""


def install(site: Path, entry_points: str) -> None:
    """A package as pip leaves it in site-packages: the module and its dist-info."""
    (site / "asgimon_pager.py").write_text(PAGER)
    info = site / "asgimon_pager-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: asgimon-pager\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def pager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, str]]]:
    install(
        tmp_path,
        """
        [asgimon.channels]
        pager = asgimon_pager:channel
        broken = asgimon_pager:broken
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    module = importlib.import_module("asgimon_pager")
    sent: list[tuple[str, str, str]] = module.SENT
    yield sent
    sys.modules.pop("asgimon_pager", None)


async def test_an_installed_channel_is_found_validated_and_used(
    pager: list[tuple[str, str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="asgimon.alerts"):
        found = load_channels(Settings())
    assert "pager" in found
    assert "broken" not in found
    assert "'broken' failed to load" in caplog.text

    async for shop in open_shop():
        bad = await shop.client.post(
            "/analytics/api/alerts",
            json={
                "projectId": "default",
                "name": "paged",
                "type": "critical_error",
                "channels": [{"type": "pager"}],
            },
        )
        assert bad.status_code == 422
        assert [d["field"] for d in bad.json()["error"]["details"]] == ["channels[0].service"]
        await shop.rule(
            type="critical_error", name="paged", channels=[{"type": "pager", "service": "ops"}]
        )
        shop.monitor.capture_exception(RuntimeError("ledger"), severity="critical")
        await shop.settle()
    assert pager == [("ops", "firing", "paged")]
