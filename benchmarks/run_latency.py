"""`imds-replay run`: how soon CMD starts, and whether CMD sees documents as soon as others do.

1. Start-up: `imds-replay run --trace terminate --port 0 -- date +%s.%N`, R times. CMD's
   start is the wall time `date` prints; run's start is taken just before it is spawned. Also
   prints the CPU seconds run had used by then (from /proc), which, unlike wall time, does
   not grow with other processes' load. replay's modules are compiled to bytecode first, as an
   install leaves them. Goal: <= 1 s.
   `--part python` measures the same from Python: `ReplayServer.run` (what the imds_replay
   fixture's `run` calls) on a server already running in the test process, as in a test suite.
2. Delivery: a looping replay (spot-eviction at --speed, 4 documents per round) runs CMD
   (`sleep`); one client polls the same session two ways in turns, over keep-alive
   connections: one opened inside CMD's network namespace (setns(2), so root only) to
   http://169.254.169.254, the path CMD's own requests take, and one to 127.0.0.1:PORT
   directly, and a second direct one as a control (its difference is this machine's noise).
   One client in one process, rotating which goes first, so other processes' load delays the
   paths alike. For every document both saw, the first sight through CMD's
   namespace minus the first sight directly; goal: p99 <= 1 ms (CMD's path no later).

Example: .venv/bin/python benchmarks/run_latency.py --rounds 10 --seconds 60
"""

from __future__ import annotations

import argparse
import compileall
import ctypes
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from processes import cpu_s, free_port, stop

ROOT = Path(__file__).resolve().parent.parent
RUN = [sys.executable, "-m", "replay", "run", "--traces-dir", str(ROOT / "traces")]
PATH = "/metadata/scheduledevents?api-version=2020-07-01"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def start_up(rounds: int) -> None:
    # An install leaves replay's modules compiled; a source tree where PYTHONDONTWRITEBYTECODE
    # is set would compile them again at every start (about 0.05 s of CPU).
    compileall.compile_dir(ROOT / "replay", quiet=1)
    walls, cpus = [], []
    for _ in range(rounds):
        began = time.time()
        command = ["sh", "-c", "date +%s.%N; sleep 0.2"]
        proc = subprocess.Popen(
            [*RUN, "--trace", "terminate", "--port", "0", "--speed", "600", "--", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        started = float(proc.stdout.readline())
        cpus.append(cpu_s(proc.pid))
        walls.append(started - began)
        proc.wait(timeout=30)
    print(f"start-up, {rounds} runs: run start -> CMD start (wall seconds)")
    print("  " + " ".join(f"{w:.3f}" for w in walls))
    print(
        f"  median {statistics.median(walls):.3f} s, max {max(walls):.3f} s; run's CPU by "
        f"then: median {statistics.median(cpus):.3f} s, max {max(cpus):.3f} s; goal <= 1 s"
    )


def start_up_from_python(rounds: int) -> None:
    from replay.testing.plugin import ReplayServer

    server = ReplayServer(ROOT / "traces").open()
    walls = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "started.txt"
            for _ in range(rounds):
                began = time.time()
                server.run(["sh", "-c", f"date +%s.%N > {out}"], "terminate", speed=600)
                walls.append(float(out.read_text()) - began)
    finally:
        server.close()
    print(f"start-up from Python, {rounds} runs: ReplayServer.run -> CMD start (wall seconds)")
    print("  " + " ".join(f"{w:.3f}" for w in walls))
    print(f"  median {statistics.median(walls):.3f} s, max {max(walls):.3f} s; goal <= 1 s")


def enter_netns_of(pid: int) -> None:
    """setns(2) into the network namespace of a process (this thread only; needs root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/proc/{pid}/ns/net") as ns:
        if libc.setns(ns.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns")


def pid_of(cmdline: list[str], within_s: float = 30.0) -> int:
    """The pid of the process running exactly this command line (CMD, seen from the host)."""
    wanted = b"".join(arg.encode() + b"\0" for arg in cmdline)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and (proc / "cmdline").read_bytes() == wanted:
                    return int(proc.name)
            except OSError:
                continue
        time.sleep(0.05)
    raise SystemExit(f"CMD ({' '.join(cmdline)}) did not start")


def incarnation_of(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", PATH, headers={"Metadata": "true"})
    body = conn.getresponse().read()
    start = body.index(b":") + 1
    return int(body[start : body.index(b",", start)])


def delivery(seconds: float, speed: float) -> None:
    if os.geteuid() != 0:
        print("delivery: skipped (entering CMD's network namespace needs root)")
        return
    port = free_port()
    marker = f"{seconds + 30:.6f}"  # CMD is `sleep <marker>`, unique enough to find it
    replay = ["--trace", "spot-eviction", "--loop", "--speed", str(speed), "--start", "now"]
    ending = ["--port", str(port), "--timeout", str(seconds + 10)]
    run = subprocess.Popen(
        [*RUN, *replay, *ending, "--", "sleep", marker],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cmd_pid = pid_of(["sleep", marker])  # it starts once the server is up
        inside: list[http.client.HTTPConnection] = []

        def connect_inside() -> None:
            enter_netns_of(cmd_pid)
            conn = http.client.HTTPConnection("169.254.169.254", 80, timeout=5)
            conn.connect()  # the socket stays in CMD's namespace, whichever thread uses it
            inside.append(conn)

        thread = threading.Thread(target=connect_inside)
        thread.start()
        thread.join()
        conns = {
            "cmd": inside[0],
            "direct": http.client.HTTPConnection("127.0.0.1", port, timeout=5),
            "control": http.client.HTTPConnection("127.0.0.1", port, timeout=5),
        }
        seen: dict[str, dict[int, float]] = {name: {} for name in conns}
        took: dict[str, list[float]] = {name: [] for name in conns}
        order = list(conns)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            order.append(order.pop(0))  # each path goes first, second and third in turn
            for name in order:
                sent = time.monotonic()
                incarnation = incarnation_of(conns[name])
                now = time.monotonic()
                took[name].append((now - sent) * 1000)
                seen[name].setdefault(incarnation, now)
    finally:
        stop(run)
    both = sorted(set.intersection(*(set(s) for s in seen.values())))[1:]  # [0]: at connect
    print(f"delivery, {len(both)} documents at {speed:g}x over {seconds:g} s; first sight (ms):")
    for label, name in (("through CMD's namespace", "cmd"), ("control, direct again", "control")):
        diffs_ms = [(seen[name][i] - seen["direct"][i]) * 1000 for i in both]
        quantiles = ", ".join(f"p{q} {percentile(diffs_ms, q):+.3f}" for q in (1, 50, 90, 99))
        print(f"  {label} minus direct: {quantiles}, max {max(diffs_ms):+.3f}")
    print("  goal: p99 <= +1 ms through CMD's namespace (the control shows this machine's noise)")
    for name, times in took.items():
        quantiles = ", ".join(f"p{q} {percentile(times, q):.3f}" for q in (50, 90, 99))
        print(f"  one request {name}: {len(times)} requests, ms: {quantiles}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="start-up runs")
    parser.add_argument("--seconds", type=float, default=60.0, help="delivery run length")
    parser.add_argument("--speed", type=float, default=120.0, help="delivery replay speed")
    parser.add_argument("--part", choices=("all", "start", "python", "delivery"), default="all")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.part in ("all", "start"):
        start_up(args.rounds)
    if args.part in ("all", "python"):
        start_up_from_python(args.rounds)
    if args.part in ("all", "delivery"):
        delivery(args.seconds, args.speed)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
