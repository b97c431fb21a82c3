"""Installed from a wheel into a fresh venv: a light base, and the user's data kept as theirs.

The wheel test builds the wheel and installs it with pip (from the package index or pip's
cache), about a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

import replay.cli.stats
from replay.cli import app
from replay.recording.capture_script import script_source

ROOT = Path(__file__).parent.parent
runner = CliRunner()


@pytest.mark.parametrize("command", [["timings"], ["plot", "live-migration", "--out", "x.png"]])
def test_a_command_needing_the_extra_says_how_to_install_it(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        replay.cli.stats, "find_spec", lambda name: None if name == "pandas" else object()
    )
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {command[0]} needs pandas: pip install 'imds-replay[analysis]'\n"
    )


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel (and its base dependencies) installed."""
    work = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(work), str(ROOT)], check=True)
    (wheel,) = work.glob("imds_replay-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    venv_pip = [str(work / "venv" / "bin" / "python"), *pip[1:]]
    subprocess.run([*venv_pip, "install", str(wheel)], check=True)
    return work / "venv"


def run(venv: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command of the installed package, run away from the checkout, with its own HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMDS_REPLAY_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    env |= {"HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_base_install_has_neither_pandas_nor_matplotlib(venv: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.util as u; print([m for m in ('pandas', 'matplotlib') if u.find_spec(m)])"
    )
    assert run(venv, tmp_path, "python", "-c", probe).stdout.strip() == "[]"
    result = run(venv, tmp_path, "imds-replay", "timings")
    assert result.returncode == 2
    assert (
        result.stderr
        == "error: timings needs pandas and matplotlib: pip install 'imds-replay[analysis]'\n"
    )


def test_installed_ingest_writes_to_the_user_data_dir_and_traces_lists_both(
    venv: Path, tmp_path: Path
) -> None:
    base = datetime(2025, 9, 1, tzinfo=UTC)
    event = {
        "EventId": "E1",
        "EventStatus": "Scheduled",
        "EventType": "Reboot",
        "ResourceType": "VirtualMachine",
        "Resources": ["vm1"],
        "NotBefore": "Mon, 01 Sep 2025 00:15:00 GMT",
        "Description": "",
        "EventSource": "User",
        "DurationInSeconds": -1,
    }
    docs = [(0, []), (60, [event]), (120, [{**event, "EventStatus": "Started", "NotBefore": ""}])]
    lines = []
    for t in range(0, 200, 10):
        events = [e for at, e in docs if at <= t][-1] if t < 180 else []
        incarnation = 1 + sum(1 for at, _ in docs if at <= t) + (t >= 180)
        stamp = (base + timedelta(seconds=t)).isoformat().replace("+00:00", "Z")
        document = {"DocumentIncarnation": incarnation, "Events": events}
        lines.append(f"{stamp} {orjson.dumps(document).decode()}\n")
    (tmp_path / "vm1.log").write_text("".join(lines))
    ingest = run(venv, tmp_path, "imds-replay", "ingest", "vm1.log", "--format", "json")
    assert ingest.returncode == 0, ingest.stderr
    (written,) = orjson.loads(ingest.stdout)["traces"]
    user_dir = tmp_path / "data" / "imds-replay" / "traces"
    assert Path(written["path"]).is_relative_to(user_dir)
    assert "site-packages" not in written["path"]
    listed = orjson.loads(run(venv, tmp_path, "imds-replay", "traces", "--format", "json").stdout)
    where = {t["name"]: (t["origin"], t["location"]) for t in listed}
    assert where[written["name"]] == ("captured", "user")
    assert where["live-migration"] == ("reference", "shipped")
    script = run(venv, tmp_path, "imds-replay", "capture", "--print-script").stdout
    assert script == script_source()  # the wheel ships the capture modules' source
    dirs = run(venv, tmp_path, "imds-replay", "traces", "--where").stdout.splitlines()
    assert dirs[0] == f"user     {user_dir}  (ingest and synth write here)"
    assert dirs[1].startswith("shipped ") and dirs[1].endswith("(read only)")
