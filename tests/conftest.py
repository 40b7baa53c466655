from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asgimon import MemoryStorage, Storage
from asgimon.storage.sql import SQLStorage


@pytest.fixture(params=["memory", "sqlite"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """Every backend, one after the other: the conformance suite runs against each."""
    backend: Storage
    if request.param == "memory":
        backend = MemoryStorage()
    else:
        backend = SQLStorage(f"sqlite:///{tmp_path / 'conformance.db'}")
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'asgimon.db'}"
