"""GET /metadata/scheduledevents throughput: `imds-replay serve` next to a bare aiohttp handler.

Usage: .venv/bin/python benchmarks/server_throughput.py [--mode alternate|concurrent]
       [--rounds N] [--duration S] [--threads N] [--connections N] [--no-pin]

Needs wrk (Debian: `apt-get install -y wrk`). Compares two single-process servers on 127.0.0.1:

- ours: `imds-replay serve --trace live-migration --speed 60 --start now --loop` (access log
  off, the CLI's default). `--loop` keeps the replay moving for the whole run, so the polls
  see the document change (20.5 s per round) instead of the finished, empty one.
- bare: one aiohttp route returning fixed bytes (the live-migration document while its event
  is Scheduled, the size ours serves most of the time), `web.run_app(..., access_log=None)`.

Every round starts both servers afresh (a single process pair can sit a few per cent off),
checks one request to each, warms them up, then measures with `wrk -t2 -c64 -d<duration>s
--latency` and a Lua script that sends `Metadata: true` and prints the summary as JSON.
`--mode alternate` (the default) runs wrk against one server, then the other, swapping the
order every round; `--mode concurrent` runs both wrk at the same time, so both servers share
the machine's background load exactly (use it on a busy machine: the ratio is then what to
read, not the absolute figures). With two or more CPUs the servers are pinned to CPU 0 and wrk
to the others (`--no-pin` turns that off).

Prints per round and as medians: requests/s, p50/p99 latency, the server's CPU time per
request (user + system, from /proc/<pid>/stat; less sensitive to other load than requests/s),
non-2xx answers and socket errors; then ours / bare, whose goal is at least 90 %.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processes import cpu_s, free_port, stop

ROOT = Path(__file__).resolve().parent.parent
PATH = "/metadata/scheduledevents?api-version=2020-07-01"
KINDS = ("ours", "bare")

LUA = """
wrk.method = "GET"
wrk.headers["Metadata"] = "true"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {\\"requests\\": %d, \\"duration_us\\": %d, \\"non2xx\\": %d, \\"errors\\": %d, " ..
    "\\"p50_us\\": %d, \\"p90_us\\": %d, \\"p99_us\\": %d, \\"max_us\\": %d}\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

BARE = """
import sys
from aiohttp import web

BODY = bytes.fromhex(sys.argv[2])
HEADERS = {"Content-Type": "application/json; charset=utf-8"}


async def handler(request: web.Request) -> web.Response:
    return web.Response(body=BODY, headers=HEADERS)


app = web.Application()
app.router.add_get("/metadata/scheduledevents", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


@dataclass
class Server:
    kind: str
    port: int
    proc: subprocess.Popen[bytes]


def bare_body() -> bytes:
    """The live-migration document while its event is Scheduled: the size ours serves."""
    import orjson

    from replay.store.dataset import load_trace

    trace = load_trace(ROOT / "traces", "live-migration")
    return orjson.dumps(trace.snapshots[1].document)


def pinned(cpus: set[int] | None) -> Any:
    def affinity() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    return affinity


def start_server(kind: str, pin: set[int] | None, log: Path) -> Server:
    port = free_port()
    if kind == "ours":
        cmd = [str(ROOT / ".venv" / "bin" / "imds-replay"), "serve", "--trace", "live-migration"]
        cmd += ["--speed", "60", "--start", "now", "--loop", "--port", str(port)]
    else:
        cmd = [sys.executable, "-c", BARE, str(port), bare_body().hex()]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pinned(pin), cwd=ROOT
        )
    deadline = time.monotonic() + 30
    request = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", headers={"Metadata": "true"})
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} server exited early:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                if response.status == 200 and "Events" in json.loads(response.read()):
                    return Server(kind, port, proc)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{kind} server did not answer within 30 s:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    stop(server.proc)


def wrk_command(args: argparse.Namespace, script: Path, port: int, duration_s: float) -> list[str]:
    return [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration_s:g}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{PATH}",
    ]


def parse_wrk(stdout: str, stderr: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise SystemExit(f"wrk printed no result:\n{stdout}\n{stderr}")


def measure(
    servers: list[Server],
    args: argparse.Namespace,
    script: Path,
    duration_s: float,
    pin: set[int] | None,
) -> list[dict[str, Any]]:
    """Run wrk against the servers at the same time; one result per server."""
    before = [cpu_s(s.proc.pid) for s in servers]
    procs = [
        subprocess.Popen(
            wrk_command(args, script, s.port, duration_s),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=pinned(pin),
        )
        for s in servers
    ]
    outputs = [p.communicate() for p in procs]
    after = [cpu_s(s.proc.pid) for s in servers]
    results = []
    for (stdout, stderr), cpu0, cpu1 in zip(outputs, before, after, strict=True):
        r = parse_wrk(stdout, stderr)
        r["cpu_us"] = (cpu1 - cpu0) * 1e6 / max(r["requests"], 1)
        results.append(r)
    return results


def line(kind: str, r: dict[str, Any]) -> str:
    return (
        f"{kind:<5} {r['rps']:>9,.0f} req/s   p50 {r['p50_us'] / 1000:6.2f} ms   "
        f"p99 {r['p99_us'] / 1000:6.2f} ms   server CPU {r['cpu_us']:6.1f} us/req   "
        f"non-2xx {r['non2xx']:g}  errors {r['errors']:g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("alternate", "concurrent"), default="alternate")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and wrk")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found; install it (Debian: apt-get install -y wrk)")

    cpus = sorted(os.sched_getaffinity(0))
    server_cpus: set[int] | None = None
    wrk_cpus: set[int] | None = None
    if not args.no_pin and len(cpus) >= 2:
        server_cpus, wrk_cpus = {cpus[0]}, set(cpus[1:])
    print(
        f"mode {args.mode}: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
        f"--latency, {args.rounds} rounds after a {args.warmup:g} s warm-up; {len(cpus)} CPUs, "
        + (f"servers on CPU {cpus[0]}, wrk on {sorted(wrk_cpus or ())}" if server_cpus else "")
        + (f"load average {os.getloadavg()[0]:.2f}" if not server_cpus else "")
    )
    if server_cpus:
        print(f"load average before: {os.getloadavg()[0]:.2f} (other work on the machine)")
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        script = tmp / "imds.lua"
        script.write_text(LUA)
        for i in range(args.rounds):
            # Fresh processes every round: one process pair alone can sit a few per cent off
            # (memory layout), which repeated rounds on the same pair would never average out.
            servers = [start_server(kind, server_cpus, tmp / f"{kind}.log") for kind in KINDS]
            try:
                measure(servers, args, script, args.warmup, wrk_cpus)
                if args.mode == "concurrent":
                    batches = [servers]
                else:
                    batches = [[s] for s in (servers if i % 2 == 0 else servers[::-1])]
                for batch in batches:
                    for server, r in zip(
                        batch, measure(batch, args, script, args.duration, wrk_cpus), strict=True
                    ):
                        results[server.kind].append(r)
                        print(f"round {i + 1}  {line(server.kind, r)}", flush=True)
            finally:
                for server in servers:
                    stop_server(server)

    keys = ("rps", "p50_us", "p99_us", "cpu_us", "non2xx", "errors")
    med = {
        k: {key: statistics.median(r[key] for r in rs) for key in keys} for k, rs in results.items()
    }
    print("median")
    for kind in KINDS:
        print(f"         {line(kind, med[kind])}")
    ratio = med["ours"]["rps"] / med["bare"]["rps"]
    per_round = [o["rps"] / b["rps"] for o, b in zip(results["ours"], results["bare"], strict=True)]
    cpu_ratio = med["bare"]["cpu_us"] / med["ours"]["cpu_us"]
    verdict = "meets" if ratio >= 0.9 else "misses"
    print(
        f"ours / bare: {ratio:.1%} of the bare handler's requests/s ({verdict} the 90 % goal); "
        f"per round {', '.join(f'{x:.0%}' for x in per_round)}; "
        f"CPU per request: bare / ours = {cpu_ratio:.1%}"
    )


if __name__ == "__main__":
    main()
