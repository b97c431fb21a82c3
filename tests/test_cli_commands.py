"""The CLI's serve and push commands end to end: every flag reaches what it controls."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from typer.testing import CliRunner

from replay.cli import app as cli_app
from replay.cli.common import Speed
from replay.playback.anchor import Start, State
from replay.server.keys import ALLOWED_HOSTS, REGISTRY


def test_serve_flags_reach_the_session_and_the_registry(
    traces_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run `serve` with every replay option; the app it would run holds them all."""
    captured: dict[str, Any] = {}

    def run_app(application: web.Application, **kwargs: Any) -> None:
        captured["app"], captured["kwargs"] = application, kwargs

    monkeypatch.setattr(web, "run_app", run_app)
    playbook = tmp_path / "faults.json"
    playbook.write_bytes(orjson.dumps([{"from_s": 10, "to_s": 20, "status": 503}]))
    result = CliRunner().invoke(
        cli_app,
        [
            "serve",
            "--trace", "live-migration",
            "--speed", "60x",
            "--loop",
            "--resources", "web-0, web-1",
            "--start", "now",
            "--approval-delay", "30",
            "--recorded-approvals",
            "--rate-limit", "7",
            "--warm-up", "2.5",
            "--faults", str(playbook),
            "--fault-seed", "11",
            "--allowed-host", "replay.test",
            "--port", "9123",
            "--traces-dir", str(traces_dir),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    application = captured["app"]
    assert captured["kwargs"]["port"] == 9123 and captured["kwargs"]["host"] == "127.0.0.1"
    registry = application[REGISTRY]
    session = registry.sessions["default"]
    options = session.options
    assert session.trace.name == "live-migration"
    assert session.speed == 60 and options.loop and session.looping
    assert options.resources == ("web-0", "web-1")
    assert options.start is Start.now and session.state is State.running
    assert options.approval_delay_s == 30
    assert options.recorded_approvals
    assert registry.rate_limiter is not None and registry.rate_limiter.limit == 7
    assert registry.warm_up_s == 2.5 and session.warm_until is not None
    assert session.faults is not None and session.faults.seed == 11
    assert [(w.from_s, w.to_s) for w in session.faults.windows] == [(10, 20)]
    assert "replay.test" in application[ALLOWED_HOSTS]


def test_serve_start_virtual_holds_trace_time(
    traces_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: dict[str, web.Application] = {}
    monkeypatch.setattr(web, "run_app", lambda a, **_: captured.setdefault("app", a))
    args = ["serve", "--trace", "user-reboot", "--start", "virtual"]
    args += ["--traces-dir", str(traces_dir)]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert captured["app"][REGISTRY].sessions["default"].state is State.virtual


async def _push(url: str, traces_dir: Path, *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "replay", "push", "--trace", "spot-eviction", "--speed", "240",
        "--to", url, "--traces-dir", str(traces_dir), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, output.decode()


async def test_push_command_delivers_every_document_to_a_webhook(
    aiohttp_server: Any, traces_dir: Path
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    code, output = await _push(f"http://127.0.0.1:{server.port}/hook", traces_dir)
    assert code == 0, output
    assert "4 delivered, 0 failed" in output
    assert [m["document"]["DocumentIncarnation"] for m in received] == [1, 2, 3, 4]


async def test_push_command_exits_1_when_the_webhook_refuses(
    aiohttp_server: Any, traces_dir: Path
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/hook", refuse)
    server = await aiohttp_server(app)
    url = f"http://127.0.0.1:{server.port}/hook"
    code, output = await _push(url, traces_dir, "--attempts", "1")
    assert code == 1, output
    assert "failed:" in output and "HTTP 500" in output


def test_push_command_rejects_a_bad_target_with_one_line() -> None:
    result = CliRunner().invoke(cli_app, ["push", "--trace", "user-reboot", "--to", "ftp://x"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --to 'ftp://x': use a ws://, wss://, http:// or https:// URL"
    ]


def test_serve_options_come_from_the_environment_and_flags_win(
    traces_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: dict[str, web.Application] = {}
    monkeypatch.setattr(web, "run_app", lambda a, **_: captured.setdefault("app", a))
    env = {
        "IMDS_REPLAY_TRACE": "user-reboot",
        "IMDS_REPLAY_SPEED": "30",
        "IMDS_REPLAY_LOOP": "1",
        "IMDS_REPLAY_APPROVAL_DELAY": "12",
        "IMDS_REPLAY_START": "virtual",
    }
    args = ["serve", "--speed", "5", "--traces-dir", str(traces_dir)]
    result = CliRunner().invoke(cli_app, args, env=env)
    assert result.exit_code == 0, result.output
    session = captured["app"][REGISTRY].sessions["default"]
    assert session.trace.name == "user-reboot"
    assert session.speed == 5  # the flag wins over IMDS_REPLAY_SPEED
    assert session.looping and session.options.approval_delay_s == 12
    assert session.state is State.virtual


def test_shared_options_take_the_environment_only_where_a_command_asks() -> None:
    """serve, run and push share --speed's definition; push does not read IMDS_REPLAY_*."""
    helps = {
        command: CliRunner().invoke(cli_app, [command, "--help"], env={"COLUMNS": "200"}).output
        for command in ("serve", "run", "push")
    }
    assert ["IMDS_REPLAY_SPEED" in helps[c] for c in helps] == [True, True, False]
    assert all("60, 60x, dev (= 60) or 200% (= 2)" in h for h in helps.values())
    assert Speed.__metadata__[0].envvar is None


@pytest.mark.parametrize("command", ["serve", "run", "capture"])
def test_help_names_each_options_environment_variable(command: str) -> None:
    result = CliRunner().invoke(cli_app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "IMDS_REPLAY_SPEED" in result.output or command == "capture"
    assert "IMDS_REPLAY_INTERVAL" in result.output or command != "capture"
