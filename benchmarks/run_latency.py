"""`imds-replay run`: how soon CMD starts, and whether CMD sees documents as soon as others do.

1. Start-up: `imds-replay run --trace terminate --port 0 -- date +%s.%N`, R times. CMD's
   start is the wall time `date` prints; run's start is taken just before it is spawned. Also
   prints the CPU seconds run had used by then (from /proc), which, unlike wall time, does
   not grow with other processes' load. Goal: <= 1 s.
   `--part python` measures the same from Python: `ReplayServer.run` (what the imds_replay
   fixture's `run` calls) on a server already running in the test process, as in a test suite.
2. Delivery: a looping replay (spot-eviction at --speed, 4 documents per round) with two
   identical pollers, each a Python process in a tight keep-alive loop that notes the
   monotonic time (system-wide; run makes no time namespace) at which it first sees each
   DocumentIncarnation: one is CMD, polling http://169.254.169.254 inside the namespace, the
   other polls the same session directly on 127.0.0.1:PORT. For every document both saw,
   CMD's time minus the direct poller's; goal: p99 <= 1 ms (CMD no later).

Example: .venv/bin/python benchmarks/run_latency.py --rounds 10 --seconds 60
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from processes import cpu_s, free_port, stop

ROOT = Path(__file__).resolve().parent.parent
RUN = [sys.executable, "-m", "replay", "run", "--traces-dir", str(ROOT / "traces")]
POLLER = """
import http.client, sys, time
host, port = sys.argv[1], int(sys.argv[2])
path = "/metadata/scheduledevents?api-version=2020-07-01"
seen = None
conn = http.client.HTTPConnection(host, port, timeout=5)
while True:
    try:
        conn.request("GET", path, headers={"Metadata": "true"})
        body = conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        conn.close()
        time.sleep(0.01)
        continue
    now = time.monotonic()
    start = body.index(b":") + 1
    incarnation = int(body[start:body.index(b",", start)])
    if incarnation != seen:
        seen = incarnation
        print(incarnation, repr(now), flush=True)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def start_up(rounds: int) -> None:
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


def read_seen(path: Path) -> dict[int, float]:
    seen = {}
    for line in path.read_text().splitlines():
        incarnation, at = line.split()
        seen[int(incarnation)] = float(at)
    return seen


def delivery(seconds: float, speed: float) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "poller.py"
        script.write_text(POLLER)
        inside, outside = Path(tmp) / "inside.txt", Path(tmp) / "outside.txt"
        with inside.open("w") as inside_out, outside.open("w") as outside_out:
            replay = ["--trace", "spot-eviction", "--loop", "--speed", str(speed), "--start", "now"]
            ending = ["--port", str(port), "--timeout", str(seconds)]
            cmd = [sys.executable, "-S", str(script), "169.254.169.254", "80"]
            run = subprocess.Popen(
                [*RUN, *replay, *ending, "--", *cmd],
                stdout=inside_out,
                stderr=subprocess.DEVNULL,
            )
            direct = subprocess.Popen(
                [sys.executable, "-S", str(script), "127.0.0.1", str(port)], stdout=outside_out
            )
            run.wait(timeout=seconds + 60)
            stop(direct)
        cmd, other = read_seen(inside), read_seen(outside)
    both = sorted(set(cmd) & set(other))[1:]  # the first: whoever connected first
    if len(both) < 10:
        raise SystemExit(f"too few documents seen by both pollers ({len(both)})")
    diffs_ms = [(cmd[i] - other[i]) * 1000 for i in both]
    print(f"delivery, {len(both)} documents at {speed:g}x over {seconds:g} s:")
    print("  CMD's first sight minus the direct poller's (ms):")
    for q in (1, 50, 90, 99):
        print(f"    p{q}: {percentile(diffs_ms, q):+.3f}")
    print(f"    max: {max(diffs_ms):+.3f}; goal: p99 <= +1 ms")


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
