"""`serve --fleet FILE`: the options that apply reach the fleet; the others are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from replay.cli import app as cli_app
from replay.playback.anchor import State
from replay.server.keys import FLEET, REGISTRY

FILE = """
[[group]]
name = "web"
trace = "{trace}"
gap_s = 60

[[vm]]
name = "web-0"
address = "127.0.0.10"
group = "web"
"""


def run_serve(
    monkeypatch: pytest.MonkeyPatch, traces_dir: Path, *args: str
) -> tuple[Any, dict[str, Any]]:
    captured: dict[str, Any] = {}

    def run_app(application: web.Application, **kwargs: Any) -> None:
        captured["app"] = application

    monkeypatch.setattr(web, "run_app", run_app)
    result = CliRunner().invoke(cli_app, ["serve", *args, "--traces-dir", str(traces_dir)])
    return result, captured


def test_serve_fleet_options_reach_the_fleet(
    traces_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(FILE.format(trace="live-migration"))
    args = ["--fleet", str(fleet_file), "--speed", "60x", "--loop", "--start", "virtual"]
    args += ["--approval-delay", "5", "--rate-limit", "3"]
    result, captured = run_serve(monkeypatch, traces_dir, *args)
    assert result.exit_code == 0, result.output
    fleet = captured["app"][FLEET].fleet
    assert fleet is not None
    assert (fleet.speed, fleet.looping, fleet.state) == (60, True, State.virtual)
    assert fleet.options.approval_delay_s == 5
    assert fleet.rate_limiter is not None and fleet.rate_limiter.limit == 3
    assert captured["app"][REGISTRY].rate_limiter is None  # counted per VM, not per address
    assert "fleet" in result.output and "1 VMs in 1 group at 60x" in result.output
    routes = [r.resource.canonical for r in captured["app"].router.routes() if r.resource]
    assert routes.index("/metadata/scheduledevents") == 0  # the fleet's, before the session's


def test_serve_faults_and_warm_up_reach_every_vm_of_the_fleet(
    traces_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(
        FILE.format(trace="live-migration")
        + '[[vm]]\nname = "web-1"\naddress = "127.0.0.11"\ngroup = "web"\nfaults = []\n'
    )
    playbook = tmp_path / "faults.json"
    playbook.write_text('[{"from_s": 60, "to_s": 120, "status": 500}]')
    args = ["--fleet", str(fleet_file), "--faults", str(playbook), "--fault-seed", "4"]
    result, captured = run_serve(monkeypatch, traces_dir, *args, "--warm-up", "2")
    assert result.exit_code == 0, result.output
    fleet = captured["app"][FLEET].fleet
    web_0, web_1 = fleet.vms["web-0"], fleet.vms["web-1"]
    assert web_0.faults is not None and [w.value for w in web_0.faults.windows] == [500]
    assert web_1.faults is None  # its own empty playbook in the file
    assert web_0.warm_until is not None and web_1.warm_until is not None
    assert "faults: 1 of 2 VMs play a playbook" in result.output
    assert "warm-up: 2 s for each VM" in result.output


def test_a_trace_path_in_a_fleet_file_is_relative_to_the_file(
    traces_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fleets").mkdir()
    fleet_file = tmp_path / "fleets" / "fleet.toml"
    relative = "../traces/scenario=spot-eviction/spot-eviction.parquet"
    fleet_file.write_text(FILE.format(trace=relative))
    result, captured = run_serve(monkeypatch, tmp_path, "--fleet", str(fleet_file))
    assert result.exit_code == 0, result.output
    fleet = captured["app"][FLEET].fleet
    assert fleet.groups["web"].plan.source.name == "spot-eviction"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trace", "live-migration"], "--trace does not apply with --fleet"),
        (["--resources", "a,b"], "--resources does not apply with --fleet"),
    ],
)
def test_options_that_do_not_apply_to_a_fleet_are_refused(
    traces_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    message: str,
) -> None:
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(FILE.format(trace="live-migration"))
    result, captured = run_serve(monkeypatch, traces_dir, "--fleet", str(fleet_file), *extra)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and "app" not in captured


def test_a_bad_fleet_file_is_one_line_naming_the_entry(
    traces_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(FILE.format(trace="live-migraton"))
    result, _ = run_serve(monkeypatch, traces_dir, "--fleet", str(fleet_file))
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {fleet_file}: [[group]] 1 ('web'), field 'trace': trace 'live-migraton' not "
        "found; did you mean 'live-migration'? (imds-replay traces)"
    )
