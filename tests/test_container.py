"""The container image, built from the Containerfile with podman and run for real.

The base is Debian's own Python (mmdebstrap + podman import: no registry is reachable here),
kept in podman's store between runs; every other layer builds as a user's `podman build` would,
with podman's layer cache. The containers serve on loopback ports of this machine or in their
own network namespace (`--network none`), never beyond it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replay.clock import SystemClock
from tests.conftest import ROOT, SHIPPED
from tests.privileged import require, stopped, wait_for_line
from tests.serving import free_port

BASE = "localhost/debian-python"
IMAGE = "localhost/imds-replay:test"
TOKEN = "container-test-token"
POLL = "/metadata/scheduledevents?api-version=2020-07-01"
RUNTIME = [
    "--runtime",
    "/usr/sbin/runc",  # crun refuses this machine's hybrid cgroups
    "--ulimit",
    "nofile=1024:1024",  # higher limits are refused here
    "--ulimit",
    "nproc=1024:1024",
]
RUN = ["podman", "run", *RUNTIME, "--health-interval", "disable"]  # no systemd timers here
clock = SystemClock()


def podman(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def own_lines(stderr: str) -> list[str]:
    """stderr without podman's own log lines (it complains about missing systemd)."""
    return [line for line in stderr.splitlines() if not line.startswith("time=")]


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A figure for the CI log, shown without -s."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"container: {line}")


@pytest.fixture(scope="module")
def base(request: pytest.FixtureRequest) -> str:
    """Debian bookworm with python3 and venv, as localhost/debian-python (built once, kept)."""
    require("podman", "/usr/sbin/runc", "mmdebstrap")
    if podman("image", "exists", BASE).returncode == 0:
        return BASE
    start = clock.now()
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "base.tar"
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=apt",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(tar),
            ],
            check=True,
            timeout=600,
        )
        subprocess.run(["podman", "import", "--quiet", str(tar), BASE], check=True, timeout=120)
    report(request, f"base image {BASE} made in {clock.now() - start:.0f} s")
    return BASE


@pytest.fixture(scope="module")
def image(base: str, request: pytest.FixtureRequest) -> str:
    """The image, built from the checkout's Containerfile."""
    start = clock.now()
    build = podman(
        "build",
        "--format=docker",  # the OCI format has no HEALTHCHECK
        *RUNTIME,
        "--network=host",
        "--volume=/etc/ssl/certs:/etc/ssl/certs:ro",  # pip trusts what the host trusts
        f"--build-arg=BASE={base}",
        f"--tag={IMAGE}",
        "--file=Containerfile",
        str(ROOT),
        timeout_s=900,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    size = int(podman("image", "inspect", "--format={{.Size}}", IMAGE).stdout)
    report(request, f"{IMAGE} built in {clock.now() - start:.0f} s, {size / 1e6:.0f} MB")
    return IMAGE


def get(url: str, token: str | None = None, **headers: str) -> tuple[int, bytes]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


class Container:
    """A detached container of the image; removed at the end."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        started = podman(*RUN[1:], "--detach", f"--name={name}", *args)
        assert started.returncode == 0, started.stderr

    def wait_until_serving(self, within_s: float = 60) -> None:
        logs = subprocess.Popen(
            ["podman", "logs", "--follow", self.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert logs.stderr is not None
            wait_for_line(logs.stderr, "IMDS at", within_s)
        finally:
            stopped(logs)

    def inspect(self, template: str) -> str:
        return podman("inspect", f"--format={template}", self.name).stdout.strip()

    def remove(self) -> None:
        podman("rm", "--force", "--time=0", self.name)


@pytest.fixture(scope="module")
def served(image: str, request: pytest.FixtureRequest) -> Iterator[tuple[Container, str]]:
    """The image's default command, published on a loopback port: (container, base URL)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start = clock.now()
    container = Container(
        f"imds-replay-test-{os.getpid()}",
        f"--publish=127.0.0.1:{port}:8080",
        f"--env=IMDS_REPLAY_TOKEN={TOKEN}",
        image,
    )
    try:
        container.wait_until_serving()
        assert get(url + POLL, Metadata="true")[0] == 200
        report(request, f"first IMDS answer {clock.now() - start:.1f} s after podman run")
        yield container, url
    finally:
        container.remove()


def test_imds_answers_from_the_container_to_a_client_on_the_host(
    served: tuple[Container, str],
) -> None:
    _, url = served
    status, body = get(url + POLL, Metadata="true")
    assert status == 200, body
    doc: dict[str, Any] = json.loads(body)
    assert isinstance(doc["DocumentIncarnation"], int) and isinstance(doc["Events"], list)
    assert get(url + POLL)[0] == 400, "IMDS needs its Metadata header, as the real one does"


def test_control_api_refuses_without_the_token_and_answers_with_it(
    served: tuple[Container, str],
) -> None:
    _, url = served
    status, body = get(url + "/replay/sessions")
    assert status == 401, body
    status, body = get(url + "/replay/sessions", token=TOKEN)
    assert status == 200, body
    sessions = json.loads(body)
    # the default command: the shipped live-migration trace at dev speed, looping
    assert [(s["trace"], s["speed"], s["loop"]) for s in sessions] == [("live-migration", 60, True)]


def test_the_server_runs_as_a_non_root_user(served: tuple[Container, str]) -> None:
    container, _ = served
    status = podman("exec", container.name, "cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == ["10001"] * 4, status
    assert "imds-replay" in podman("exec", container.name, "cat", "/proc/1/cmdline").stdout


def test_the_health_check_answers(served: tuple[Container, str]) -> None:
    container, _ = served
    check = podman("healthcheck", "run", container.name)
    assert check.returncode == 0, check.stdout + check.stderr


def test_without_a_token_the_image_refuses_with_one_line(image: str) -> None:
    result = podman(*RUN[1:], "--rm", "--env=IMDS_REPLAY_TOKEN=", image)
    assert result.returncode == 2, result.stderr
    assert own_lines(result.stderr) == [
        "error: binding 0.0.0.0 exposes the control API and page: give --token (or set "
        "IMDS_REPLAY_TOKEN); the IMDS routes stay open as on a real VM"
    ]


def test_traces_in_a_volume_at_data_are_what_it_serves(image: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        shutil.copytree(SHIPPED / "scenario=spot-eviction", data / "scenario=spot-eviction")
        for path in [Path(tmp), *data.rglob("*"), data]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the image's user
        result = podman(
            *RUN[1:], "--rm", f"--volume={data}:/data:ro", image, "traces", "--format", "json"
        )
    assert result.returncode == 0, result.stderr
    assert [t["name"] for t in json.loads(result.stdout)] == ["spot-eviction"]


def test_sigterm_stops_it_within_a_second_with_a_stream_open(
    image: str, request: pytest.FixtureRequest
) -> None:
    port = free_port()
    container = Container(
        f"imds-replay-stop-{os.getpid()}",
        f"--publish=127.0.0.1:{port}:8080",
        f"--env=IMDS_REPLAY_TOKEN={TOKEN}",
        image,
    )
    try:
        container.wait_until_serving()
        stream = urllib.request.urlopen(
            urllib.request.Request(
                f"http://127.0.0.1:{port}/s/default/events",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ),
            timeout=5,
        )
        with stream:
            assert stream.status == 200
            sent_ns = clock.wall().timestamp() * 1e9
            # --time 1: podman kills with SIGKILL (exit code 137) if SIGTERM takes longer
            assert podman("stop", "--time=1", container.name).returncode == 0
        exited_ns = int(container.inspect("{{.State.FinishedAt.UnixNano}}"))
        assert container.inspect("{{.State.ExitCode}}") == "0"
        took_s = (exited_ns - sent_ns) / 1e9
        report(request, f"podman stop: exit code 0, {took_s:.2f} s after SIGTERM")
        assert took_s < 1.0
    finally:
        container.remove()


def test_sidecar_polls_169_254_169_254_unmodified_and_its_approval_starts_the_event(
    image: str, base: str
) -> None:
    replay = Container(
        f"imds-replay-sidecar-{os.getpid()}",
        "--network=none",  # only lo: the probe for a real IMDS goes nowhere
        "--cap-add=NET_ADMIN,NET_BIND_SERVICE",  # podman gives them to the non-root user
        f"--env=IMDS_REPLAY_TOKEN={TOKEN}",
        image,
        *("serve", "--link-local", "--trace", "live-migration", "--speed", "60"),
    )
    try:
        replay.wait_until_serving()
        handler = podman(
            *RUN[1:],
            "--rm",
            f"--network=container:{replay.name}",
            f"--volume={ROOT / 'examples' / 'sample_handler.py'}:/handler.py:ro",
            base,  # Debian's python3 and Microsoft's sample handler: nothing of ours
            *("python3", "/handler.py", "--seconds", "8"),
        )
        assert handler.returncode == 0, handler.stderr
        lines = handler.stdout.splitlines()
        statuses = [line.split()[3] for line in lines if line.startswith("event ")]
        assert statuses == ["Scheduled", "Started"], handler.stdout
        assert any(line.startswith("approve ") and line.endswith("-> 200") for line in lines)
        assert podman("exec", replay.name, "id", "-u").stdout.strip() == "10001"
    finally:
        replay.remove()


def test_sigterm_ends_serve_quickly_with_a_stream_open(traces_dir: Path) -> None:
    """Outside a container too: an open SSE stream does not hold the exit for 60 s."""
    port = free_port()
    command = [sys.executable, "-m", "replay", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--trace", "live-migration", "--traces-dir", str(traces_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        wait_for_line(proc.stderr, "IMDS at", within_s=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/s/default/events", timeout=5):
            start = clock.now()
            code, rest = stopped(proc, within_s=5)
            took_s = clock.now() - start
    finally:
        if proc.poll() is None:
            stopped(proc)
    assert code == 0, rest
    assert took_s < 1.0
