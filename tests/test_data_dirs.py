"""Where traces live: a checkout's traces/, or (installed) the user's data dir plus the shipped
reference traces; listings read footers (a bundle's index) and validate only with --check."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import replay.store.layout as layout
from replay.cli import app
from replay.clock import FakeClock
from replay.playback.registry import SessionRegistry
from replay.store.dataset import find_trace, load_trace, scan, write_bundle, write_trace
from replay.store.footer import META_INDEX, infos_of
from replay.store.layout import checkout_traces_dir, dataset_dirs, default_traces_dir
from replay.store.schema import bundle_table
from tests.helpers import simple_trace

ROOT = Path(__file__).parent.parent
runner = CliRunner()


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package as a wheel installs it (no pyproject.toml beside it, the reference traces
    in replay/_traces), and a user data dir under tmp_path; returns the data home."""
    package = tmp_path / "site-packages" / "replay"
    shutil.copytree(ROOT / "traces", package / "_traces")
    monkeypatch.setattr(layout, "_PACKAGE", package)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv(layout.TRACES_ENV, raising=False)
    return tmp_path / "data"


def test_in_a_checkout_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(layout.TRACES_ENV, raising=False)
    assert checkout_traces_dir() == ROOT / "traces"
    assert default_traces_dir() == ROOT / "traces"
    assert dataset_dirs(ROOT / "traces") == [ROOT / "traces"]


def test_installed_writes_go_to_the_user_data_dir(installed: Path) -> None:
    user = installed / "imds-replay" / "traces"
    assert checkout_traces_dir() is None
    assert default_traces_dir() == user
    assert dataset_dirs(user) == [user, layout.shipped_traces_dir()]
    written = write_trace(simple_trace("mine"), default_traces_dir())
    assert written.is_relative_to(user)
    names = {i.name: layout.location_of(i.path) for i in scan(default_traces_dir())[0]}
    assert names["mine"] == "user" and names["live-migration"] == "shipped"
    assert find_trace(user, "live-migration").is_relative_to(layout.shipped_traces_dir())
    assert load_trace(user, "mine").name == "mine"


def test_the_environment_and_the_option_still_name_one_dataset(
    installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(layout.TRACES_ENV, str(tmp_path / "elsewhere"))
    assert default_traces_dir() == tmp_path / "elsewhere"
    assert dataset_dirs(tmp_path / "elsewhere") == [tmp_path / "elsewhere"]


def test_traces_lists_both_with_their_location_and_where_prints_the_dirs(installed: Path) -> None:
    write_trace(simple_trace("mine"), default_traces_dir())
    listed = orjson.loads(runner.invoke(app, ["traces", "--format", "json"]).stdout)
    by_name = {t["name"]: (t["origin"], t["location"]) for t in listed}
    assert by_name["mine"] == ("captured", "user")
    assert by_name["live-migration"] == ("reference", "shipped")
    result = runner.invoke(app, ["traces", "--where", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == [
        {"path": str(default_traces_dir()), "location": "user", "writes": True, "exists": True},
        {
            "path": str(layout.shipped_traces_dir()),
            "location": "shipped",
            "writes": False,
            "exists": True,
        },
    ]
    table = runner.invoke(app, ["traces", "--where"]).stdout
    assert str(default_traces_dir()) in table and "shipped" in table


def test_a_bundle_lists_from_its_index_and_an_older_bundle_without_one_still_lists(
    tmp_path: Path,
) -> None:
    traces = [simple_trace(n) for n in ("x", "y", "z")]
    path = write_bundle(traces, tmp_path, "pack")
    assert META_INDEX in pq.read_metadata(path).metadata
    older = tmp_path / "scenario=host-maintenance" / "older.parquet"
    table = bundle_table([simple_trace(n) for n in ("u", "v")])
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != META_INDEX}
    pq.write_table(table.replace_schema_metadata(metadata), older)
    assert [(i.name, i.events, i.documents, i.duration_s) for i in infos_of(path)] == [
        (n, 1, 4, 700.0) for n in ("x", "y", "z")
    ]
    assert [i.name for i in infos_of(older)] == ["u", "v"]
    assert [i.scenario for i in infos_of(path)] == ["host-maintenance"] * 3


def test_traces_reads_footers_and_check_validates_every_trace(tmp_path: Path) -> None:
    path = write_trace(simple_trace("t1"), tmp_path)
    table = pq.read_table(path)
    offsets = table.column("offset_s").to_pylist()
    broken = table.set_column(table.schema.get_field_index("offset_s"), "offset_s", [offsets[::-1]])
    pq.write_table(broken, path)  # the footer still says all is well
    quick = runner.invoke(app, ["traces", "--traces-dir", str(tmp_path), "--format", "json"])
    assert [t["name"] for t in orjson.loads(quick.stdout)] == ["t1"]
    checked = runner.invoke(
        app, ["traces", "--traces-dir", str(tmp_path), "--check", "--format", "json"]
    )
    assert orjson.loads(checked.stdout) == []
    assert "warning: skipped" in checked.stderr and "t1.parquet" in checked.stderr


def test_a_long_listing_is_plain_aligned_text(tmp_path: Path) -> None:
    write_bundle([simple_trace(f"t{i:04d}") for i in range(1200)], tmp_path, "many")
    result = runner.invoke(app, ["traces", "--traces-dir", str(tmp_path)])
    lines = result.stdout.splitlines()
    assert lines[0] == f"1200 traces in {tmp_path}"
    assert lines[1].split() == [
        "name", "scenario", "origin", "location", "events", "documents", "duration_s"
    ]  # fmt: skip
    assert lines[2].split() == ["t0000", "host-maintenance", "captured", "dataset", "1", "4", "700"]
    assert len({len(line) for line in lines[2:]}) == 1  # aligned


def test_the_server_plays_shipped_and_user_traces_by_name(installed: Path) -> None:
    write_trace(simple_trace("mine"), default_traces_dir())
    registry = SessionRegistry(default_traces_dir(), FakeClock())
    assert registry.trace("mine").origin == "captured"
    assert registry.trace("live-migration").origin == "reference"
    assert {"mine", "live-migration"} <= set(registry.trace_names())
