"""Soak: 100 sessions at 60x under mixed GET/POST load, 10 minutes, errors and RSS.

Usage: .venv/bin/python benchmarks/soak.py [--duration 600] [--sessions 100] [--speed 60]
       [--threads 2] [--connections 64] [--post-share 0.1] [--unknown-share 0.3] [--no-pin]

Needs wrk (Debian: `apt-get install -y wrk`). Starts `imds-replay serve` (idle, log level
info, its log kept in a temporary file) on a free port, creates --sessions sessions through
the control API (POST /replay/sessions: s000, s001, ... round-robin over the dataset's
traces, --speed, looping so their documents keep changing, started now, each with its own
name as Resources), then runs `wrk` for --duration seconds with benchmarks/soak.lua: every
request goes to a random session's /s/<name>/metadata/scheduledevents; --post-share of them
are POSTs of StartRequests, with an EventId that session served (from an earlier answer) or,
for --unknown-share of the POSTs, an unknown one that IMDS answers with 400.

Prints requests and rate, latency, errors (socket errors; answers other than 200 and the
expected 400s for unknown EventIds, which are counted apart), tracebacks in the server log,
and the server's RSS (VmRSS of /proc/<pid>/status, sampled every few seconds): before the
load, at the start (after a warm-up of 10 % of the run, at most 60 s: buffers and caches
filled), the peak and the end. Goals: 0 errors; RSS at the end within 10 % of the start.
With two or more CPUs the server is pinned to CPU 0 and wrk to the others (--no-pin: not).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from processes import free_port

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "soak.lua"
SAMPLE_S = 5.0


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def call(base: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def pinned(cpus: set[int] | None) -> Any:
    def affinity() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    return affinity


def start_server(port: int, log: Path, pin: set[int] | None) -> subprocess.Popen[bytes]:
    """`imds-replay serve`, idle; returns once it says it listens."""
    out = log.open("wb")
    cmd = [sys.executable, "-m", "replay", "serve", "--port", str(port), "--log-level", "info"]
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=pinned(pin)
    )
    deadline = time.monotonic() + 30
    while b"IMDS at" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"server did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return proc


class Sampler(threading.Thread):
    """VmRSS of a process every SAMPLE_S seconds, with the time of each sample."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - t0, rss_mb(self.pid)))
            self.stop.wait(SAMPLE_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--post-share", type=float, default=0.1, help="share of POSTs")
    parser.add_argument("--unknown-share", type=float, default=0.3, help="unknown EventIds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and wrk")
    args = parser.parse_args()
    if not 1 <= args.sessions <= 1000:
        raise SystemExit("--sessions must be 1 to 1000 (soak.lua names them s000 to s999)")
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (Debian)")
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = wrk_cpus = None
    if not args.no_pin and len(cpus) >= 2:
        server_cpus, wrk_cpus = {cpus[0]}, set(cpus[1:])

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    log = work / "server.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port, log, server_cpus)
    try:
        traces = [t["name"] for t in call(base, "GET", "/replay/traces")]
        for i in range(args.sessions):
            name = f"s{i:03d}"
            body = {
                "name": name,
                "trace": traces[i % len(traces)],
                "speed": args.speed,
                "loop": True,
                "start": "now",
                "resources": [name],
            }
            call(base, "POST", "/replay/sessions", body)
        sampler = Sampler(server.pid)
        before_mb = rss_mb(server.pid)
        sampler.start()
        print(
            f"soak: {args.sessions} sessions at {args.speed:g}x looping over {len(traces)} "
            f"traces, wrk -t{args.threads} -c{args.connections} for {args.duration:g} s, "
            f"{args.post_share:.0%} POSTs ({args.unknown_share:.0%} of them unknown EventIds); "
            f"server pid {server.pid}"
            + (
                f" on CPU {sorted(server_cpus)}, wrk on {sorted(wrk_cpus or ())}"
                if server_cpus
                else ""
            ),
            flush=True,
        )
        cmd = [
            wrk,
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{int(args.duration)}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            base,
            "--",
            str(args.sessions),
            str(args.seed),
            str(args.post_share),
            str(args.unknown_share),
        ]
        started = time.monotonic()
        run = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            preexec_fn=pinned(wrk_cpus),
            timeout=args.duration + 120,
        )
        elapsed_s = time.monotonic() - started
        sampler.stop.set()
        sampler.join()
        end_mb = rss_mb(server.pid)
        statuses = call(base, "GET", "/replay/sessions")
        alive = call(base, "GET", "/replay/sessions/s000")["state"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    result_lines = [line for line in run.stdout.splitlines() if line.startswith("SOAK ")]
    if run.returncode != 0 or not result_lines:
        raise SystemExit(f"wrk failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    r = json.loads(result_lines[0][5:])
    server_log = log.read_text(errors="replace")
    tracebacks = server_log.count("Traceback")
    handler_errors = server_log.count("Error handling request")
    transitions = server_log.count('"event":"transition"')
    approvals_logged = server_log.count('"event":"approval"')

    warm_s = min(60.0, args.duration * 0.1)
    samples = sampler.samples
    start_mb = next((mb for t, mb in samples if t >= warm_s), samples[-1][1])
    peak_mb = max(mb for _, mb in samples)
    rounds = [s["round"] for s in statuses if s["name"] != "default"]
    approvals = sum(len(s["approvals"]) for s in statuses)
    errors = r["socket_errors"] + r["unexpected"]
    seconds = r["duration_us"] / 1e6
    print(f"wrk ran {elapsed_s:.0f} s; server log: {log}")
    print(
        f"requests      {r['requests']} in {seconds:.1f} s = {r['requests'] / seconds:.0f}/s: "
        f"{r['gets']} GET, {r['posts_known']} POST of served EventIds, "
        f"{r['posts_unknown']} POST of unknown EventIds (counts of requests sent)"
    )
    print(
        f"answers       {r['ok']} x 200, {r['expected_400']} x 400 for unknown EventIds "
        f"(expected), {r['unexpected']} other"
        + "".join(f", {v} x {k[7:]}" for k, v in sorted(r.items()) if k.startswith("status_"))
    )
    print(
        f"errors        {errors} (goal 0): {r['unexpected']} unexpected answers, "
        f"{r['socket_errors']} socket errors (connect {r['connect_errors']}, read "
        f"{r['read_errors']}, write {r['write_errors']}, timeout {r['timeouts']}); "
        f"server log: {tracebacks} tracebacks, {handler_errors} 'Error handling request'"
    )
    print(
        f"latency       p50 {r['p50_us'] / 1000:.2f} ms, p99 {r['p99_us'] / 1000:.2f} ms, "
        f"p99.9 {r['p999_us'] / 1000:.2f} ms, max {r['max_us'] / 1000:.1f} ms"
    )
    print(
        f"sessions      {len(rounds)} looping, rounds played {min(rounds)} to {max(rounds)}; "
        f"{transitions} transitions and {approvals_logged} approvals logged; "
        f"{approvals} approvals in the status; s000 {alive} at the end"
    )
    change = (end_mb - start_mb) / start_mb
    print(
        f"RSS           before load {before_mb:.1f} MB, start (after {warm_s:.0f} s) "
        f"{start_mb:.1f} MB, peak {peak_mb:.1f} MB, end {end_mb:.1f} MB: "
        f"end vs start {change:+.1%} (goal within 10 %)"
    )
    print(
        "RSS samples   "
        + " ".join(f"{t:.0f}s:{mb:.1f}" for t, mb in samples[:: max(1, len(samples) // 12)])
    )
    ok = errors == 0 and tracebacks == 0 and abs(change) <= 0.10
    print("PASS" if ok else "FAIL", "(0 errors, no tracebacks, RSS within 10 %)")


if __name__ == "__main__":
    main()
