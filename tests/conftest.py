from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
