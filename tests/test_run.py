"""`imds-replay run`: real handlers, unmodified, as real processes in a real namespace.

Each run is bounded in time. Where this machine cannot make user and network namespaces the
tests that need them skip with the reason; with CI=true that is a failure instead.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from replay.cli import app
from replay.clock import SystemClock
from replay.testing.plugin import Replay
from replay.testing.report import RunReport
from replay.testing.run import Ending, ReplaySpec, run_handler
from replay.testing.sandbox import unavailable_reason
from tests.conftest import ROOT, SHIPPED

EXAMPLES = ROOT / "examples"
ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
"""The handlers talk to 169.254.169.254 directly, as on a VM (no proxy)."""
CI = os.environ.get("CI", "").lower() == "true"
RUN = [sys.executable, "-m", "replay", "run", "--port", "0", "--traces-dir", str(SHIPPED)]


@pytest.fixture(scope="module")
def namespaces() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if CI:
        pytest.fail(f"CI=true, and this machine cannot make network namespaces: {reason}")
    pytest.skip(f"this machine cannot make network namespaces: {reason}")


@pytest.fixture(scope="module")
def curl() -> str:
    found = shutil.which("curl")
    if found is None:
        if CI:
            pytest.fail("CI=true and curl is missing (scripts/test installs it as root)")
        pytest.skip("curl is not installed (apt-get install -y curl)")
    return found


@dataclass
class Ran:
    status: int
    stdout: str
    stderr: str
    report: dict[str, Any]


def run(
    tmp_path: Path, *args: str, command: list[str], stdin: str = "", within_s: float = 40
) -> Ran:
    """`imds-replay run ARGS -- COMMAND`, bounded; its exit status, output and --report."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [*RUN, "--report", str(report), *args, "--", *command],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=within_s,
        env=ENV,
        cwd=tmp_path,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    body = orjson.loads(report.read_bytes()) if report.exists() else {}
    return Ran(proc.returncode, proc.stdout, proc.stderr, body)


def expectation(ran: Ran, name: str) -> dict[str, Any]:
    (found,) = [e for e in ran.report["expectations"] if e["name"] == name]
    return found  # type: ignore[no-any-return]


# -- handlers as shipped -------------------------------------------------------------------------


def test_an_interactive_sample_style_handler_approves_the_freeze_with_notice_left(
    namespaces: None, tmp_path: Path
) -> None:
    """Microsoft's documented sample, in shape: a hard-coded address and a menu on stdin."""
    ran = run(
        tmp_path,
        *("--trace", "live-migration", "--speed", "60", "--expect", "approve"),
        command=[sys.executable, str(EXAMPLES / "menu_handler.py")],
        stdin="1\n1\n1\n2\n",  # the empty document, the Scheduled Freeze, its start; quit
    )
    assert ran.status == 0, ran.stderr
    assert "approving short freeze" in ran.stdout and "has started" in ran.stdout
    (event,) = ran.report["events"]
    assert event["event_type"] == "Freeze"
    assert event["approved_while"] == "Scheduled"
    # Scheduled at 30 s with NotBefore at 930 s; a 1 s poll at 60x sees it within 60 trace s.
    assert 900 - 120 < event["approved_notice_left_s"] < 900
    assert expectation(ran, "approve")["ok"]
    assert ran.report["ended_by"] == "exit" and ran.report["exit_code"] == 0
    assert "ok   approve" in ran.stderr  # the table at the end


def test_a_shell_loop_with_curl_approves_and_sees_the_event_end(
    namespaces: None, curl: str, tmp_path: Path
) -> None:
    ran = run(
        tmp_path,
        *("--trace", "live-migration", "--speed", "60", "--expect", "approve"),
        *("--expect", "recovered", "--expect", "no-errors"),
        command=["sh", str(EXAMPLES / "curl_handler.sh")],
    )
    assert ran.status == 0, ran.stderr
    (event,) = ran.report["events"]
    assert event["approved_while"] == "Scheduled" and event["approved_notice_left_s"] > 700
    assert event["recovered"] is True
    assert f"approved {event['event_id']}" in ran.stdout
    assert all(e["ok"] for e in ran.report["expectations"])
    requests = ran.report["requests"]
    assert set(requests["by_status"]) == {"200"}
    assert requests["api_versions"] == {"2020-07-01": requests["total"]}


def test_a_cron_style_handler_reads_its_name_as_text_and_approves_the_terminate(
    namespaces: None, curl: str, tmp_path: Path
) -> None:
    cron = f"while :; do sh {EXAMPLES / 'cron_handler.sh'} & sleep 1; done"
    ran = run(
        tmp_path,
        *("--trace", "terminate", "--speed", "120", "--grace", "0.5", "--expect", "approve"),
        command=["sh", "-c", cron],
    )
    assert ran.status == 0, ran.stderr  # stopped by run after the replay: 0
    assert ran.report["ended_by"] == "grace"
    (event,) = ran.report["events"]
    assert event["event_type"] == "Terminate" and event["approved_while"] == "Scheduled"
    assert f"vm-0: approved {event['event_id']}" in ran.stdout
    assert "2021-12-13" in ran.report["requests"]["api_versions"]  # compute/name as text


# -- what the report catches ---------------------------------------------------------------------

NEVER_APPROVES = (
    "while :; do curl -sf -H Metadata:true "
    "'http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01' >/dev/null; "
    "sleep 0.1; done"
)


def test_a_handler_that_never_approves_fails_expect_approve_with_the_reason(
    namespaces: None, curl: str, tmp_path: Path
) -> None:
    ran = run(
        tmp_path,
        *("--trace", "spot-eviction", "--speed", "600", "--grace", "0.2", "--expect", "approve"),
        command=["sh", "-c", NEVER_APPROVES],
    )
    assert ran.status == 3
    outcome = expectation(ran, "approve")
    assert not outcome["ok"]
    (event,) = ran.report["events"]
    assert outcome["why"] == f"Preempt {event['event_id']} was never approved"
    assert event["detected_after_s"] is not None and event["approved_while"] is None
    assert f"FAIL approve: Preempt {event['event_id']} was never approved" in ran.stderr


def test_a_handler_without_the_metadata_header_is_reported_with_its_400s(
    namespaces: None, curl: str, tmp_path: Path
) -> None:
    url = "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01"
    ran = run(
        tmp_path,
        *("--trace", "terminate", "--speed", "600", "--expect", "no-errors"),
        command=["sh", "-c", f"for i in 1 2 3; do curl -s '{url}'; echo; done"],
    )
    assert ran.status == 3
    assert "Required metadata header not specified" in ran.stdout
    requests = ran.report["requests"]
    assert requests["by_status"] == {"400": 3} and requests["missing_metadata"] == 3
    assert expectation(ran, "no-errors")["why"] == "answered 3 x 400"


def test_the_handler_gets_etags_and_rate_limits_like_any_client(
    namespaces: None, curl: str, tmp_path: Path
) -> None:
    url = "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01"
    script = (
        f"etag=$(curl -s -D - -o /dev/null -H Metadata:true '{url}' | tr -d '\\r' "
        "| sed -n 's/^ETag: //ip'); "
        f"curl -s -o /dev/null -w '%{{http_code}}\\n' -H Metadata:true "
        f"-H \"If-None-Match: $etag\" '{url}'; "
        f"for i in 1 2 3 4 5 6; do curl -s -o /dev/null -H Metadata:true '{url}'; done"
    )
    ran = run(
        tmp_path,
        *("--trace", "live-migration", "--speed", "1", "--rate-limit", "3"),
        command=["sh", "-c", script],
    )
    assert ran.status == 0, ran.stderr
    assert ran.stdout.strip() == "304"
    by_status = ran.report["requests"]["by_status"]
    assert by_status["429"] >= 1 and by_status["304"] == 1
    assert ran.report["requests"]["peak_per_second"] >= 4


# -- from Python ---------------------------------------------------------------------------------


def test_the_fixture_runs_a_handler_and_returns_a_typed_report(
    namespaces: None, imds_replay: Replay
) -> None:
    report = imds_replay.run(
        [sys.executable, str(EXAMPLES / "menu_handler.py")],
        "live-migration",
        speed=60,
        expect=["approve"],
        input="1\n1\n1\n2\n",
        stdout=subprocess.DEVNULL,
    )
    assert isinstance(report, RunReport) and report.ok
    (event,) = report.events
    assert event.approved_notice_left_s is not None and event.approved_notice_left_s > 60
    assert (report.ended_by, report.exit_code) == ("exit", 0)
    assert imds_replay.approvals == [event.event_id]  # the same session the control API shows


def test_run_handler_needs_no_server_and_reports_what_was_missed(
    namespaces: None, curl: str
) -> None:
    report = run_handler(
        ["sh", "-c", NEVER_APPROVES],
        ReplaySpec("spot-eviction", speed="600x"),
        expect=["approve"],
        ending=Ending(grace_s=0.2),
        traces_dir=SHIPPED,
    )
    assert report.ended_by == "grace" and report.run_status == 3
    assert report.expectations[0].why.endswith("was never approved")


# -- stopping ------------------------------------------------------------------------------------


def test_a_command_ignoring_sigterm_with_children_leaves_nothing_behind(
    namespaces: None, tmp_path: Path
) -> None:
    marker = f"stubborn-{uuid.uuid4()}"
    child = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"time.sleep(300)  # {marker}"
    )
    parent = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"kids = [subprocess.Popen([sys.executable, '-c', {child!r}]) for _ in range(2)]\n"
        "print(os.readlink('/proc/self/ns/net'), len(kids), flush=True)\n"
        "time.sleep(300)\n"
    )
    clock = SystemClock()
    began = clock.now()
    ran = run(
        tmp_path,
        *("--trace", "terminate", "--speed", "1", "--timeout", "1"),
        command=[sys.executable, "-c", parent],
    )
    took = clock.now() - began
    assert ran.status == 124
    assert ran.report["ended_by"] == "timeout"
    assert ran.report["exit_code"] == -9 and ran.report["signal"] == "SIGKILL"
    netns, kids = ran.stdout.split()
    assert netns.startswith("net:[") and kids == "2"
    assert took < 1 + 3 + 10  # timeout, SIGTERM's 3 s, and starting up on a busy machine
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                left.append(proc.name)
            if os.readlink(proc / "ns" / "net") == netns:
                left.append(proc.name)
        except OSError:
            continue  # gone meanwhile, or not ours to read
    assert left == []


def test_ctrl_c_stops_the_command_and_still_writes_the_report(
    namespaces: None, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    waits = "import time; print('up', flush=True); time.sleep(300)"
    proc = subprocess.Popen(
        [*RUN, "--trace", "terminate", "--report", str(report), "--", sys.executable, "-c", waits],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "up\n"  # bounded by the wait below if it never comes
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        proc.kill()
        stderr = proc.communicate()[1]
    assert proc.returncode == 130, stderr
    body = orjson.loads(report.read_bytes())
    assert body["ended_by"] == "interrupt" and body["signal"] == "SIGTERM"
    assert "was stopped by Ctrl-C" in stderr


def test_run_goes_without_numpy_and_pyarrow_compute(namespaces: None) -> None:
    """Neither serves CMD, and both would delay it (benchmarks/run_latency.py --part start):
    pyarrow imports numpy wherever it is installed, and a cast would import pyarrow.compute."""
    args = ["run", "--traces-dir", str(SHIPPED), "--trace", "terminate", "--port", "0"]
    code = (
        "import sys\nfrom replay.cli import app\n"
        f"try:\n    app({[*args, '--', 'true']!r}, prog_name='imds-replay')\n"
        "except SystemExit as exc:\n    print(exc.code)\n"
        "print(sorted(m for m in ('numpy', 'pyarrow.compute', 'pandas') if sys.modules.get(m)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=40, env=ENV
    )
    assert proc.stdout.splitlines() == ["0", "[]"], proc.stderr


# -- refusals ------------------------------------------------------------------------------------


def test_without_namespaces_run_says_why_in_one_line_and_exits_2(tmp_path: Path) -> None:
    """A user namespace whose limit is 0 nested user namespaces: unshare fails as when disabled."""
    if shutil.which("unshare") is None or unavailable_reason() is not None:
        pytest.skip("needs unshare(1) and user namespaces to take them away")
    command = " ".join([*RUN, "--trace", "terminate", "--", "true"])
    limit = f"echo 0 > /proc/sys/user/max_user_namespaces || exit 77; exec {command}"
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c", limit],
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
    )
    if proc.returncode == 77:
        pytest.skip("this system does not let a user namespace limit its own namespaces")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: cannot create a user and network namespace")
    assert "sysctl" in line and "imds-replay serve" in line


def test_a_busy_port_or_a_missing_trace_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for args, message in (
            (["--trace", "terminate", "--port", port], f"cannot listen on 127.0.0.1:{port}"),
            (["--trace", "terminat", "--port", "0"], "trace 'terminat' not found"),
        ):
            proc = subprocess.run(
                [*RUN[:4], *args, "--traces-dir", str(SHIPPED), "--", "true"],
                capture_output=True,
                text=True,
                timeout=30,
                env=ENV,
            )
            assert proc.returncode == 2
            (line,) = proc.stderr.splitlines()  # and nothing from the namespace's helper
            assert line.startswith("error: ") and message in line


def test_a_run_that_fails_at_start_up_leaves_the_collector_as_it_was() -> None:
    """run pauses the garbage collector while it starts; a caller in the same process (a
    test) gets it back as it was, whatever happened."""
    args = ["run", "--trace", "terminat", "--traces-dir", str(SHIPPED), "--", "true"]
    was = gc.isenabled()
    try:
        for collecting in (True, False):
            gc.enable() if collecting else gc.disable()
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 2 and "trace 'terminat' not found" in result.output
            assert gc.isenabled() is collecting
    finally:
        gc.enable() if was else gc.disable()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expect", "approve-all", "--", "true"], "unknown expectation 'approve-all'"),
        (["--", "no-such-handler-xyz"], "command 'no-such-handler-xyz' not found"),
        ([], "no command to run"),
        (["--timeout", "0", "--", "true"], "--timeout more than 0"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["run", "--trace", "terminate", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
