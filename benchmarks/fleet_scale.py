"""A fleet at scale: thousands of VMs, each polling once a second from its own 127.x.y.z.

Usage: .venv/bin/python benchmarks/fleet_scale.py [--mode both|keepalive|newconn]
       [--vms 5000] [--groups 50] [--new-conn-vms 2000] [--run-s 60] [--warm-s 10]
       [--speed 60] [--procs N] [--no-pin]

Writes a fleet file (groups of 100 VMs, three fault domains each, the shipped traces in turn,
`rollout = "fault-domain"`, `gap_s = 60`) and serves it in a child process the way
`imds-replay serve --fleet FILE --speed 60 --loop --start now` does (the same library calls),
plus an access logger that records, per request, the time from the request being read to the
response being written (aiohttp's own measure for access logs): the server-side latency.

Two runs (`--mode both`, the default):
- keepalive: `--vms` VMs (5,000 in 50 groups), each on one kept-alive connection, like a
  long-running handler;
- newconn: `--new-conn-vms` VMs (2,000), each opening a new connection for every poll, like
  the documented curl loop.

The load generator (fleet_load.py) is this script's own (wrk cannot choose source addresses):
`--procs` processes (default: the CPUs left after the server's one), each an asyncio loop of raw
protocols playing a slice of the VMs, every VM polling at its own phase of each second. After
`--warm-s` seconds it measures `--run-s` seconds (60 s at 60x: an hour of trace). Every child
stops at the window's end and has DRAIN_S to collect answers; the parent kills what is left.
With two or more CPUs the server is pinned to CPU 0 and the generators to the others.
`--nice -15` (as root) lets them preempt other work on a shared machine: without it, the
figures measure how long the scheduler keeps them waiting (the load average is printed).

Mid-window, one VM approves its group's Scheduled event (a POST from its own address); every
VM of that group must see Started on its first poll sent after the approval's answer, none
later.

Prints, per run: polls, errors (non-200, resets, no answer), overruns (a VM still waiting when
its next poll was due), client p50/p99/max, the generator's lag (send time minus due time)
p99, server-side p50/p99/max, server CPU and RSS (VmRSS, VmHWM), the generators' CPU, the
approval check, and the goals: client p99 <= 10 ms, 0 errors, RSS <= 400 MB, 0 late.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path
from typing import Any

from fleet_load import STARTED, Record, Slice, address_of, generate
from processes import cpu_s, free_port, stop

ROOT = Path(__file__).resolve().parent.parent
TRACES = (
    "live-migration",
    "host-maintenance",
    "user-reboot",
    "user-redeploy",
    "platform-redeploy",
    "terminate",
)
FAULT_DOMAINS = 3
GAP_S = 60
GROUP_SIZE = 100
PATH = "/metadata/scheduledevents?api-version=2020-07-01"


# -- the server (a child process: fleet_scale.py --serve FILE) ------------------------------
def serve(args: argparse.Namespace) -> None:
    from aiohttp import web
    from aiohttp.abc import AbstractAccessLogger

    from replay.cli.common import settle_collector
    from replay.cli.fleet import fleet_host_for
    from replay.clock import SystemClock
    from replay.playback.anchor import Start
    from replay.playback.fleet import FleetOptions
    from replay.playback.registry import DEFAULT, SessionRegistry
    from replay.playback.session import SessionOptions
    from replay.server.app import make_app
    from replay.store.layout import default_traces_dir

    samples = array("d")

    class Timing(AbstractAccessLogger):
        """Records each request's time from read to written (aiohttp's access-log measure)."""

        def log(self, request: Any, response: Any, time: float) -> None:
            samples.append(time)

    def reset() -> None:
        del samples[:]

    def dump() -> None:
        ordered = sorted(samples)
        stats = {"count": len(ordered)}
        if ordered:
            stats.update(p50=pct(ordered, 50), p99=pct(ordered, 99), max=ordered[-1])
        tmp = Path(args.stats + ".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.rename(args.stats)

    async def signals(app: web.Application) -> None:
        loop = __import__("asyncio").get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, reset)
        loop.add_signal_handler(signal.SIGUSR2, dump)

    clock = SystemClock()
    traces = default_traces_dir()
    registry = SessionRegistry(traces, clock)
    if args.baseline:  # today's single-session server: one replay for every client
        options = SessionOptions(speed=args.speed, loop=True, start=Start.now)
        registry.create(DEFAULT, registry.trace("live-migration"), options)
        app = make_app(registry, clock=clock)
    else:
        plays = FleetOptions(speed=args.speed, loop=True, start=Start.now)
        host = fleet_host_for(Path(args.serve), traces, clock, plays, not_for_fleets=[])
        app = make_app(registry, clock=clock, fleet_host=host)
    app.on_startup.append(signals)
    gc.collect()  # as `imds-replay serve` does
    settle_collector()
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log_class=Timing,
        access_log=logging.getLogger("fleet-bench"),
        print=lambda _: print("IMDS at", flush=True, file=sys.stderr),
    )


# -- the run ---------------------------------------------------------------------------------
def pct(ordered: Any, p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return float(ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))])


def write_fleet(path: Path, vms: int, groups: int) -> list[list[int]]:
    """A fleet file: groups of consecutive VMs; returns each group's VM indices."""
    members: list[list[int]] = [[] for _ in range(groups)]
    lines = []
    for g in range(groups):
        lines += [
            "[[group]]",
            f'name = "g-{g:02d}"',
            f'trace = "{TRACES[g % len(TRACES)]}"',
            f"gap_s = {GAP_S}",
        ]
    for i in range(vms):
        g = i * groups // vms
        fd = len(members[g]) % FAULT_DOMAINS
        members[g].append(i)
        lines += [
            "[[vm]]",
            f'name = "vm-{i}"',
            f'address = "{address_of(i)}"',
            f'group = "g-{g:02d}"',
            f"fault_domain = {fd}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return members


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def approve_somewhere(port: int, groups: list[list[int]]) -> tuple[int, str, str, float] | None:
    """As the leader of some group's Scheduled event, approve it from the leader's address.

    Returns (group, leader, EventId, monotonic instant the 200 arrived), or None."""
    control = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for g, members in enumerate(groups):
            control.request("GET", f"/replay/fleet/vms/vm-{members[0]}")
            status = json.loads(control.getresponse().read())
            scheduled = [e for e in status["document"]["Events"] if e["EventStatus"] == "Scheduled"]
            if not scheduled:
                continue
            event = scheduled[0]
            leader = event["Resources"][0]
            conn = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=30, source_address=(address_of(int(leader[3:])), 0)
            )
            body = json.dumps({"StartRequests": [{"EventId": event["EventId"]}]})
            conn.request("POST", PATH, body=body, headers={"Metadata": "true"})
            answer = conn.getresponse()
            answer.read()
            done = time.monotonic()
            conn.close()
            if answer.status != 200:
                raise RuntimeError(f"approval answered {answer.status}")
            return g, leader, event["EventId"], done
    finally:
        control.close()
    return None


def placed(cpus: set[int] | None, nice: int) -> None:
    """Pin this process to cpus (if any) and raise or lower its priority by nice."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    if nice:
        os.nice(nice)


def until(t: float) -> None:
    while (left := t - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))


def run(args: argparse.Namespace, keep_alive: bool, vms: int) -> dict[str, Any]:
    groups = max(1, vms // GROUP_SIZE) if vms != args.vms else args.groups
    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2 and not args.no_pin
    procs = args.procs or max(1, len(cpus) - 1)
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Path(tmp) / "fleet.toml"
        members = write_fleet(fleet, vms, groups)
        stats_path = Path(tmp) / "server-stats.json"
        port = free_port()
        command = [sys.executable, __file__, "--serve", str(fleet), "--port", str(port)]
        command += ["--speed", str(args.speed), "--stats", str(stats_path)]
        command += ["--baseline"] if args.baseline else []
        server = subprocess.Popen(
            command,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            preexec_fn=lambda: placed({cpus[0]} if pin else None, args.nice),
        )
        assert server.stderr is not None
        children: list[tuple[Any, Any]] = []
        try:
            for line in server.stderr:
                if "IMDS at" in line:
                    break
            else:
                raise RuntimeError("the server did not start")
            # keep reading what the server says, so a full pipe never blocks it; keep its end
            said: list[str] = []
            threading.Thread(target=lambda: said.extend(server.stderr or []), daemon=True).start()
            rss_start, _ = memory_mb(server.pid)
            context = multiprocessing.get_context("fork")
            share = -(-vms // procs)
            gen_cpus = set(cpus[1:]) if pin else None
            for first in range(0, vms, share):
                parent, child = context.Pipe()
                part = Slice(first, min(share, vms - first), vms, "127.0.0.1", port, keep_alive)
                proc = context.Process(
                    target=generate, args=(part, child, gen_cpus, args.nice), daemon=True
                )
                proc.start()
                children.append((proc, parent))
            connected = 0
            for _, pipe in children:
                if not pipe.poll(120):
                    raise RuntimeError("a generator did not connect within 120 s")
                connected += pipe.recv()[1]
            t0 = time.monotonic() + 0.5
            start, end = t0 + args.warm_s, t0 + args.warm_s + args.run_s
            for _, pipe in children:
                pipe.send((t0, start, end))
            until(start)
            os.kill(server.pid, signal.SIGUSR1)
            cpu_start = cpu_s(server.pid)
            until(start + args.run_s * 0.3)
            try:
                probe = None if args.baseline else approve_somewhere(port, members)
            except (OSError, RuntimeError) as exc:
                print(f"approval probe failed: {exc}", flush=True)
                probe = None
            until(end)
            cpu_run = cpu_s(server.pid) - cpu_start
            rss, hwm = memory_mb(server.pid)
            os.kill(server.pid, signal.SIGUSR2)
            records: list[Record] = []
            for proc, pipe in children:
                if pipe.poll(30):
                    records.append(pipe.recv()[1])
                proc.join(timeout=5)
            for _ in range(100):
                if stats_path.exists():
                    break
                time.sleep(0.05)
            server_stats = json.loads(stats_path.read_text())
        finally:
            for proc, _ in children:
                if proc.is_alive():
                    proc.kill()
            stop(server)
            for line in said[-5:] if "said" in locals() else []:
                print(f"  server: {line.rstrip()}")
    if len(records) != len(children):
        raise RuntimeError(f"{len(children) - len(records)} generators sent no results")
    return summarize(
        args,
        keep_alive,
        vms,
        groups,
        connected,
        records,
        server_stats,
        probe,
        members,
        cpu_run,
        rss_start,
        rss,
        hwm,
    )


def summarize(
    args: argparse.Namespace,
    keep_alive: bool,
    vms: int,
    groups: int,
    connected: int,
    records: list[Record],
    server: dict[str, Any],
    probe: tuple[int, str, str, float] | None,
    members: list[list[int]],
    server_cpu_s: float,
    rss_start: float,
    rss: float,
    hwm: float,
) -> dict[str, Any]:
    latency = sorted(x for r in records for x in r.latency_s)
    lag = sorted(x for r in records for x in r.lag_s)
    result: dict[str, Any] = {
        "mode": "keepalive" if keep_alive else "newconn",
        "vms": vms,
        "groups": groups,
        "connected": connected,
        "generators": len(records),
        "polls": sum(r.polls for r in records),
        "errors": sum(r.errors for r in records),
        "problems": [p for r in records for p in r.problems][:5],
        "overruns": sum(r.overruns for r in records),
        "client_ms": {k: pct(latency, p) * 1000 for k, p in (("p50", 50), ("p99", 99))}
        if latency
        else {},
        "client_max_ms": latency[-1] * 1000 if latency else None,
        "lag_p99_ms": pct(lag, 99) * 1000 if lag else None,
        "server_ms": {k: server[k] * 1000 for k in ("p50", "p99", "max") if k in server},
        "server_requests": server.get("count"),
        "server_cpu_pct": 100 * server_cpu_s / args.run_s,
        "server_cpu_us_per_request": 1e6 * server_cpu_s / max(1, server.get("count") or 0),
        "generator_cpu_s": [round(r.cpu_s, 1) for r in records],
        "rss_mb": {"start": rss_start, "end": rss, "peak": hwm},
        "slow_seconds": slow_seconds(records),
    }
    if probe is not None:
        g, leader, event_id, done = probe
        group = set(members[g])
        first_after: dict[int, tuple[float, int]] = {}
        for r in records:
            for vm, sent, seen in zip(r.vm, r.sent_at, r.seen, strict=True):
                if vm not in group or sent <= done:
                    continue
                if vm not in first_after or sent < first_after[vm][0]:
                    first_after[vm] = (sent, seen)
        late = [vm for vm, (_, seen) in first_after.items() if seen != STARTED]
        waits = sorted(sent - done for sent, _ in first_after.values())
        result["approval"] = {
            "group": f"g-{g:02d}",
            "by": leader,
            "event_id": event_id,
            "group_vms": len(group),
            "polled_after": len(first_after),
            "started_on_next_poll": len(first_after) - len(late),
            "late": len(late),
            "next_poll_within_s": waits[-1] if waits else None,
        }
    return result


def slow_seconds(records: list[Record], worst: int = 3) -> dict[str, Any]:
    """When the slow answers came: each second of the window by its p99 (so a few stalls
    can be told from a server that is slow throughout)."""
    by_second: dict[int, list[float]] = {}
    sent = [t for r in records for t in r.sent_at]
    if not sent:
        return {"over_10_ms": 0, "seconds": 0, "worst": []}
    start = min(sent)
    for r in records:
        for t, latency in zip(r.sent_at, r.latency_s, strict=True):
            by_second.setdefault(int(t - start), []).append(latency)
    p99s = {second: pct(sorted(v), 99) * 1000 for second, v in by_second.items()}
    ranked = sorted(p99s.items(), key=lambda item: -item[1])
    return {
        "over_10_ms": sum(1 for v in p99s.values() if v > 10),
        "seconds": len(p99s),
        "worst": [{"second": second, "p99_ms": round(v, 1)} for second, v in ranked[:worst]],
    }


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    c, s, a = result["client_ms"], result["server_ms"], result.get("approval")
    kind = "today's single-session server" if args.baseline else "fleet"
    print(
        f"\n== {kind}, {result['mode']}: {result['vms']} VMs in {result['groups']} groups, "
        f"{args.run_s:g} s at {args.speed:g}x after {args.warm_s:g} s warm-up, "
        f"{result['generators']} generator process(es)"
    )
    print(
        f"polls {result['polls']}  errors {result['errors']}  overruns {result['overruns']}"
        f"  connected {result['connected']}"
    )
    for problem in result["problems"]:
        print(f"  problem: {problem}")
    print(
        f"client  p50 {c.get('p50', 0):.2f} ms  p99 {c.get('p99', 0):.2f} ms  "
        f"max {result['client_max_ms'] or 0:.1f} ms  (generator lag p99 "
        f"{result['lag_p99_ms'] or 0:.2f} ms)"
    )
    print(
        f"server  p50 {s.get('p50', 0):.3f} ms  p99 {s.get('p99', 0):.3f} ms  "
        f"max {s.get('max', 0):.1f} ms  ({result['server_requests']} requests, "
        f"CPU {result['server_cpu_pct']:.0f} %, {result['server_cpu_us_per_request']:.0f} us each)"
    )
    slow = result["slow_seconds"]
    worst = ", ".join(f"t={w['second']} s: {w['p99_ms']:.1f} ms" for w in slow["worst"])
    print(
        f"seconds with client p99 > 10 ms: {slow['over_10_ms']} of {slow['seconds']}"
        f" (worst {worst})"
    )
    rss = result["rss_mb"]
    print(
        f"server RSS {rss['start']:.0f} MB at start, {rss['end']:.0f} MB at end, "
        f"peak {rss['peak']:.0f} MB"
    )
    gen = result["generator_cpu_s"]
    print(f"generators CPU {sum(gen):.1f} s in total ({', '.join(map(str, gen))})")
    if a:
        print(
            f"approval by {a['by']} ({a['group']}): {a['started_on_next_poll']}/{a['group_vms']} "
            f"VMs saw Started on their next poll, {a['late']} later; "
            f"{a['polled_after']} polled after it, the last {a['next_poll_within_s'] or 0:.3f} s "
            "after"
        )
    else:
        print("approval: no Scheduled event found mid-window (not checked)")
    goals = {
        "client p99 <= 10 ms": c.get("p99", 1e9) <= 10,
        "0 errors": result["errors"] == 0,
        "RSS <= 400 MB": rss["peak"] <= 400,
        "0 late after an approval": bool(a)
        and a["late"] == 0
        and a["polled_after"] == a["group_vms"],
    }
    if args.baseline:
        del goals["0 late after an approval"]  # one session: nothing to propagate
    print("goals: " + ", ".join(f"{k}: {'ok' if v else 'MISSED'}" for k, v in goals.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("both", "keepalive", "newconn"), default="both")
    parser.add_argument("--vms", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--new-conn-vms", type=int, default=2000)
    parser.add_argument("--run-s", type=float, default=60.0)
    parser.add_argument("--warm-s", type=float, default=10.0)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--procs", type=int, default=0)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness for the server and generators (e.g. -15 as root on a shared machine)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="serve one session (live-migration) to every VM instead of the fleet: today's server",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
        + (f", server and generators at nice {args.nice}" if args.nice else "")
    )
    results = []
    if args.mode in ("both", "keepalive"):
        results.append(run(args, True, args.vms))
        report(results[-1], args)
    if args.mode in ("both", "newconn"):
        results.append(run(args, False, args.new_conn_vms))
        report(results[-1], args)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
