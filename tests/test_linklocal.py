"""`serve --link-local`: the replay at 169.254.169.254:80, in network namespaces the tests make.

Never on the host's own interfaces: each test makes a namespace with `unshare -n` (only a
loopback interface, no route out), so even the probe for a real IMDS leaves no machine.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from replay.cli import app
from replay.server import linklocal
from tests.conftest import ROOT
from tests.privileged import require, stopped, wait_for_line

TOKEN = "linklocal-test-token"
HOLD = "import sys; print('in', flush=True); sys.stdin.read()"
SERVE = [sys.executable, "-m", "replay", "serve", "--link-local", "--token", TOKEN]


class Namespace:
    """A network namespace held open by a process that waits on its stdin."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "-n", sys.executable, "-c", HOLD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.holder.stdout is not None
        wait_for_line(self.holder.stdout, "in", within_s=10)

    def command(self, *args: str) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", *args]

    def run(self, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout_s, check=False
        )

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def loopback_addresses(self) -> str:
        return self.run("ip", "-o", "-4", "addr", "show", "dev", "lo").stdout

    def close(self) -> None:
        self.holder.communicate(timeout=10)  # closing its stdin ends it


@pytest.fixture
def netns() -> Iterator[Namespace]:
    require("unshare", "nsenter", "setpriv", "ip")
    ns = Namespace()
    try:
        yield ns
    finally:
        ns.close()


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_handler_in_the_namespace_polls_the_real_address_and_its_approval_starts_the_event(
    netns: Namespace, traces_dir: Path
) -> None:
    serve = netns.popen(
        *SERVE, "--trace", "live-migration", "--speed", "60", "--traces-dir", str(traces_dir)
    )
    try:
        assert serve.stderr is not None
        wait_for_line(serve.stderr, "IMDS at http://169.254.169.254:80/", within_s=30)
        assert "inet 169.254.169.254/32" in netns.loopback_addresses()
        # Microsoft's sample handler, unmodified: its default base is http://169.254.169.254
        handler = netns.run(
            sys.executable, str(ROOT / "examples" / "sample_handler.py"), "--seconds", "8"
        )
        assert handler.returncode == 0, handler.stderr
        lines = handler.stdout.splitlines()
        statuses = [line.split()[3] for line in lines if line.startswith("event ")]
        assert statuses == ["Scheduled", "Started"], handler.stdout
        assert any(line.startswith("approve ") and line.endswith("-> 200") for line in lines)
    finally:
        code, rest = stopped(serve)
    assert code == 0, rest
    assert "169.254.169.254" not in netns.loopback_addresses(), "the address stays behind"


def test_refuses_where_something_already_answers_at_the_address(
    netns: Namespace, traces_dir: Path
) -> None:
    assert netns.run("ip", "link", "set", "lo", "up").returncode == 0
    assert netns.run("ip", "addr", "add", "169.254.169.254/32", "dev", "lo").returncode == 0
    imds = netns.popen(sys.executable, "-u", "-m", "http.server", "80", "--bind", "169.254.169.254")
    try:
        assert imds.stdout is not None
        wait_for_line(imds.stdout, "Serving HTTP", within_s=10)
        refused = netns.run(*SERVE, "--traces-dir", str(traces_dir))
        assert imds.poll() is None, "the 'real' IMDS must keep serving"
    finally:
        stopped(imds)
    assert refused.returncode == 2, refused.stderr
    assert error_lines(refused.stderr) == [
        "error: 169.254.169.254:80 already answers (HTTP/1.0 404 File not found): on a cloud "
        "VM that is the real IMDS, and a replay must never shadow it; use --link-local only "
        "in a network namespace of its own (a pod sidecar, --network container:NAME, "
        "unshare -n)"
    ]
    assert "inet 169.254.169.254/32" in netns.loopback_addresses()


@pytest.mark.parametrize(
    ("dropped", "named"),
    [("net_admin", "CAP_NET_ADMIN"), ("net_bind_service", "CAP_NET_BIND_SERVICE")],
)
def test_without_a_capability_one_line_names_it_and_nothing_changes(
    netns: Namespace, traces_dir: Path, dropped: str, named: str
) -> None:
    # root without the capability: its bounding set no longer has it after exec
    result = netns.run(
        "setpriv", f"--bounding-set=-{dropped}", *SERVE, "--traces-dir", str(traces_dir)
    )
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert result.stderr.splitlines() == lines, "nothing printed before the refusal"
    assert "169.254.169.254" not in netns.loopback_addresses()


@pytest.mark.parametrize("extra", [["--port", "8081"], ["--host", "0.0.0.0"]])
def test_link_local_takes_no_host_or_port(extra: list[str]) -> None:
    result = CliRunner().invoke(app, ["serve", "--link-local", "--token", "t", *extra])
    assert result.exit_code == 2
    assert "--link-local serves on 169.254.169.254:80: leave out --host and --port" in (
        result.output
    )


def test_link_local_needs_a_token_like_any_address_off_loopback() -> None:
    result = CliRunner(env={"IMDS_REPLAY_TOKEN": None}).invoke(app, ["serve", "--link-local"])
    assert result.exit_code == 2
    assert "binding 169.254.169.254 exposes the control API" in result.output


class _Answering(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_probe_reports_the_status_line_of_whatever_answers() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert linklocal.probe("127.0.0.1", port) == "HTTP/1.0 200 OK"
    finally:
        server.shutdown()
        server.server_close()
    assert linklocal.probe("127.0.0.1", port, timeout_s=0.5) is None  # refused: nothing there


def test_an_address_it_cannot_listen_on_is_one_line_and_exit_2(traces_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*SERVE[:4], "--port", str(port), "--traces-dir", str(traces_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
