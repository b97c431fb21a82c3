"""`imds-replay capture --print-script`: the capture modules as one stdlib-only Python 3.8 file,
run under `python3 -I -S` against a real `imds-replay serve`, ingesting like a capture."""

from __future__ import annotations

import ast
import http.client
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from inotify_simple import INotify, flags
from typer.testing import CliRunner

from replay.cli import app
from replay.clock import SystemClock
from replay.core.imds import LATEST_VERSION
from replay.recording.capture_main import OPTIONS
from replay.recording.capture_script import MODULES, script_source
from replay.recording.ingest import capture_traces
from replay.recording.parse import parse_capture
from tests.serving import serving

ROOT = Path(__file__).parent.parent
PYTHON3 = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
runner = CliRunner()


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = runner.invoke(app, ["capture", "--print-script"])
    assert result.exit_code == 0, result.output
    path = tmp_path_factory.mktemp("script") / "capture.py"
    path.write_text(result.stdout)
    return path


def test_the_script_is_the_capture_modules_own_source(script: Path) -> None:
    """Every top-level definition of each capture module is in the script, verbatim."""
    text = script.read_text()
    assert text == script_source()
    for name in MODULES:
        source = (ROOT / "replay" / "recording" / f"{name}.py").read_text()
        tree = ast.parse(source)
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                assert ast.get_source_segment(source, node) in text, f"{name}.{node.name}"
    assert "import replay" not in text and "from replay" not in text
    assert f"LATEST_VERSION = {LATEST_VERSION!r}" in text


def test_the_script_imports_only_the_standard_library_and_parses_as_python_3_8(
    script: Path,
) -> None:
    tree = ast.parse(script.read_text(), feature_version=(3, 8))
    modules = {
        ((node.module or "") if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


def _long_options(help_text: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z-]+", help_text)) - {"--help"}


def test_the_script_has_the_options_of_the_command(script: Path) -> None:
    script_help = subprocess.run(
        [PYTHON3, "-I", "-S", str(script), "--help"], capture_output=True, text=True, check=True
    ).stdout
    command = typer.main.get_command(app).commands["capture"]  # type: ignore[attr-defined]
    options = {o for p in command.params for o in p.opts if o.startswith("--")}
    assert _long_options(script_help) == options - {"--help", "--print-script"}
    assert {f"--{o.replace('_', '-')}" for o in OPTIONS} == _long_options(script_help)
    for option in OPTIONS:
        assert f"IMDS_REPLAY_{option.upper()}" in script_help
        assert f"IMDS_REPLAY_{option.upper()}" in runner.invoke(app, ["capture", "--help"]).stdout


def test_capture_options_come_from_the_environment_and_a_flag_wins(tmp_path: Path) -> None:
    env = {
        "IMDS_REPLAY_URL": "http://127.0.0.1:9/metadata/scheduledevents",
        "IMDS_REPLAY_OUT": str(tmp_path / "from-env.jsonl"),
        "IMDS_REPLAY_DURATION": "0",
        "IMDS_REPLAY_APPROVE": "user",
        "IMDS_REPLAY_INTERVAL": "5",
    }
    result = runner.invoke(app, ["capture", "--interval", "2"], env=env)
    assert result.exit_code == 0, result.output
    header = orjson.loads((tmp_path / "from-env.jsonl").read_bytes().splitlines()[0])["capture"]
    assert (header["url"], header["approve"], header["interval_s"]) == (
        env["IMDS_REPLAY_URL"],
        "user",
        2.0,
    )


def test_the_script_reads_the_same_environment(script: Path, tmp_path: Path) -> None:
    env = {
        "IMDS_REPLAY_URL": "http://127.0.0.1:9/metadata/scheduledevents",
        "IMDS_REPLAY_DURATION": "0",
        "IMDS_REPLAY_APPROVE": "all",
    }
    out = tmp_path / "c.jsonl"
    done = subprocess.run(
        [PYTHON3, "-I", "-S", str(script), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1].startswith("stopped (duration): polls 0 |")
    header = orjson.loads(out.read_bytes().splitlines()[0])["capture"]
    assert (header["url"], header["approve"]) == (env["IMDS_REPLAY_URL"], "all")
    bad = subprocess.run(
        [PYTHON3, "-I", "-S", str(script), "--interval", "0", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert (
        bad.stderr.splitlines()[-1]
        == "error: --interval must be a positive number of seconds, got 0.0"
    )


# -- end to end: the script and `imds-replay capture` side by side on one replay ------------

INTERVAL = "0.05"


def _call(base: str, method: str, path: str) -> None:
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    try:
        conn.request(method, path)
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def _documents(path: Path) -> list[Any]:
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    return [orjson.loads(x)["document"] for x in lines if b'"document"' in x]


def _until(condition: Callable[[], bool], what: str, watch: Path, within_s: float = 20.0) -> None:
    """Wait for a condition that other processes bring about by writing files in `watch`:
    woken by the kernel (inotify) each time a file there changes, bounded by within_s."""
    clock = SystemClock()
    deadline = clock.now() + within_s
    with INotify() as inotify:
        inotify.add_watch(watch, flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.CLOSE_WRITE)
        while not condition():  # checked after the watch exists: no change can slip between
            left_ms = math.ceil((deadline - clock.now()) * 1000)
            assert left_ms > 0, f"timed out waiting for {what}"
            inotify.read(timeout=left_ms)


@contextmanager
def _running(
    command: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=20)
        assert proc.stderr is not None
        proc.stderr.close()


def test_the_script_under_python3_isolated_captures_what_the_command_captures(
    script: Path, traces_dir: Path, tmp_path: Path
) -> None:
    by_script, by_command = tmp_path / "script.jsonl", tmp_path / "command.jsonl"
    with serving("--trace", "live-migration", "--start", "virtual", traces_dir=traces_dir) as base:
        url = f"{base}/metadata/scheduledevents?api-version={LATEST_VERSION}"
        env = {"IMDS_REPLAY_URL": url, "IMDS_REPLAY_INTERVAL": INTERVAL}
        script_run = [PYTHON3, "-I", "-S", str(script), "--out", str(by_script)]
        command_run = [sys.executable, "-m", "replay", "capture", "--url", url]
        command_run += ["--interval", INTERVAL, "--out", str(by_command)]
        with _running(script_run, env) as one, _running(command_run) as two:
            files = (by_script, by_command)
            _until(
                lambda: all(_documents(f) for f in files),
                "both captures' first document",
                tmp_path,
            )
            for step in range(3):  # Scheduled, Started, gone
                _call(base, "POST", "/replay/sessions/default/step")
                _until(
                    lambda n=step: all(len(_documents(f)) == n + 2 for f in files),
                    f"step {step}",
                    tmp_path,
                )
            for proc in (one, two):
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=20) == 0
    assert _documents(by_script) == _documents(by_command)
    assert orjson.loads(by_script.read_bytes().splitlines()[-1])["heartbeat"]["stopped"] == "signal"
    (from_script,) = capture_traces(parse_capture(by_script))
    (from_command,) = capture_traces(parse_capture(by_command))
    assert from_script.scenario == from_command.scenario == "live-migration"
    assert [s.document for s in from_script.snapshots] == [
        s.document for s in from_command.snapshots
    ]

    def after_first_event(trace: Any) -> list[float]:
        first = trace.snapshots[1].offset_s
        return [s.offset_s - first for s in trace.snapshots[1:]]

    # Both saw each step within a poll or two of it (both are wall-clock observers).
    for a, b in zip(after_first_event(from_script), after_first_event(from_command), strict=True):
        assert abs(a - b) <= 4 * float(INTERVAL) + 0.5, (a, b)
    assert set(orjson.loads(by_script.read_bytes().splitlines()[0])["capture"]) == set(
        orjson.loads(by_command.read_bytes().splitlines()[0])["capture"]
    )
    assert os.access(script, os.R_OK)
