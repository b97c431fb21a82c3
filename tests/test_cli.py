from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from replay.cli import app
from replay.cli.common import SERVER_GC_THRESHOLD, plain_table, settle_collector
from replay.core.speed import parse_speed
from replay.errors import SpeedError

runner = CliRunner()


def test_traces_json_lists_the_nine_scenarios(traces_dir: Path) -> None:
    result = runner.invoke(app, ["traces", "--traces-dir", str(traces_dir), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = orjson.loads(result.stdout)
    assert len(rows) == 9
    assert {"name", "scenario", "events", "documents", "duration_s", "origin"} <= set(rows[0])
    lm = next(r for r in rows if r["name"] == "live-migration")
    assert (lm["scenario"], lm["events"], lm["documents"], lm["origin"]) == (
        "live-migration",
        1,
        4,
        "reference",
    )


@pytest.mark.parametrize("args", [[], ["--check"], ["--where"], ["--format", "json"]])
def test_traces_gives_the_garbage_collector_back(traces_dir: Path, args: list[str]) -> None:
    """The listing pauses the collector; a caller in the same process gets it back."""
    assert gc.isenabled()
    result = runner.invoke(app, ["traces", "--traces-dir", str(traces_dir), *args])
    assert result.exit_code == 0, result.output
    assert gc.isenabled()


def test_traces_reads_the_environment_variable(traces_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (traces_dir / "scenario=terminate" / "terminate.parquet").unlink()
    monkeypatch.setenv("IMDS_REPLAY_TRACES", str(traces_dir))
    rows = orjson.loads(runner.invoke(app, ["traces", "--format", "json"]).stdout)
    assert len(rows) == 8


def test_traces_table_warns_about_bad_files(traces_dir: Path) -> None:
    (traces_dir / "scenario=terminate" / "broken.parquet").write_bytes(b"PAR1garbage")
    result = runner.invoke(app, ["traces", "--traces-dir", str(traces_dir)])
    assert result.exit_code == 0
    assert "broken.parquet" in result.stderr
    assert "9 traces" in result.stdout


def test_show_prints_the_timeline(traces_dir: Path) -> None:
    result = runner.invoke(
        app, ["show", "user-reboot", "--traces-dir", str(traces_dir), "--format", "json"]
    )
    assert result.exit_code == 0
    shown = orjson.loads(result.stdout)
    statuses = [[e["EventStatus"] for e in d["document"]["Events"]] for d in shown["documents"]]
    assert statuses == [[], ["Scheduled"], ["Started"], []]


def test_show_accepts_a_path(traces_dir: Path) -> None:
    path = traces_dir / "scenario=terminate" / "terminate.parquet"
    result = runner.invoke(app, ["show", str(path)])
    assert result.exit_code == 0
    assert "Terminate" in result.stdout


def test_unknown_trace_suggests_names_and_exits_2(traces_dir: Path) -> None:
    result = runner.invoke(app, ["show", "live-migraton", "--traces-dir", str(traces_dir)])
    assert result.exit_code == 2
    assert "did you mean 'live-migration'" in result.stderr
    assert "Traceback" not in result.output


def test_help_does_not_import_pandas_or_pyarrow() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from replay.cli import app;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_command_has_help_with_an_example() -> None:
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert "Example: imds-replay" in (command.help or ""), name


@pytest.mark.parametrize(
    ("text", "speed"),
    [("60", 60), ("60x", 60), ("dev", 60), ("200%", 2), ("0.5", 0.5), ("1.5X", 1.5)],
)
def test_speed_accepts_factors_dev_and_percentages(text: str, speed: float) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["fast", "0", "-3", "60y", "%", "", "1e9"])
def test_bad_speed_is_a_clear_error(text: str) -> None:
    with pytest.raises(SpeedError, match="speed"):
        parse_speed(text)


def test_serve_with_a_bad_speed_exits_2_before_binding(traces_dir: Path) -> None:
    result = runner.invoke(
        app, ["serve", "--trace", "user-reboot", "--speed", "fast", "--traces-dir", str(traces_dir)]
    )
    assert result.exit_code == 2
    assert "speed 'fast' is not understood" in result.stderr


def test_serving_a_trace_does_not_import_pandas(traces_dir: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from replay.clock import SystemClock;"
        "from replay.playback.registry import SessionRegistry;"
        "from replay.server.app import make_app;"
        f"r = SessionRegistry(Path({str(traces_dir)!r}), SystemClock());"
        "r.trace('live-migration'); r.trace_names(); make_app(r, clock=SystemClock());"
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_plain_table_aligns_each_column_to_its_widest_cell() -> None:
    text = plain_table(
        ["name", "n", "x", "duration_s", "note"],  # text, integers, mixed, seconds, last
        [("a", 5, 1.5, "700", None), ("long-name", -120, "y", "5", "x"), ("b", 7, None, None, "")],
    )
    assert text.splitlines() == [
        "name       n     x    duration_s  note",
        "a          5     1.5         700",
        "long-name  -120  y             5  x",
        "b          7",
    ]
    assert plain_table(["name", "x_s"], []) == "name  x_s"


def test_a_serving_process_freezes_start_up_and_collects_the_young_less_often() -> None:
    before = gc.get_threshold()
    try:
        settle_collector()
        assert gc.get_freeze_count() > 0  # start-up's objects are out of the collector's sight
        assert gc.get_threshold() == (SERVER_GC_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
