from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from replay.clock import FakeClock
from replay.playback.registry import SessionRegistry
from replay.server.app import make_app

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "traces"


@pytest.fixture
def traces_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped dataset."""
    target = tmp_path / "traces"
    shutil.copytree(SHIPPED, target)
    return target


@pytest.fixture(autouse=True)
def _no_env_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMDS_REPLAY_TRACES", raising=False)


@pytest.fixture
def clock() -> FakeClock:
    """Time that moves only when the test says so."""
    return FakeClock()


@pytest.fixture
def registry(traces_dir: Path, clock: FakeClock) -> SessionRegistry:
    """Sessions over a private copy of the shipped dataset, on the fake clock."""
    return SessionRegistry(traces_dir, clock)


@pytest.fixture
async def client(aiohttp_client: Any, registry: SessionRegistry, clock: FakeClock) -> Any:
    """An aiohttp test client for the app (no port, no sleeping)."""
    return await aiohttp_client(make_app(registry, clock=clock))
