"""10,000 concurrent replay sessions in one process: memory, ticker lateness, never early.

Usage: .venv/bin/python benchmarks/sessions_scale.py [--sessions N] [--speed X]
       [--run-s S] [--polls-per-s N] [--no-loop] [--no-stagger] [--gc-freeze]

Creates the sessions through SessionRegistry.create on the real clock (SystemClock), spread
round-robin over every shipped trace, each started now at `--speed` (60x) and looping so they
keep moving for the whole run. Anchors are staggered: right after creating it, each session
seeks to a random offset of its trace, so transitions are spread over time instead of firing
together. Then the event loop runs for `--run-s` seconds of wall time (60) while:

- every session has a subscriber that records Pushed.lateness_s of each transition its ticker
  pushes (how long after the scheduled instant the document was pushed), and checks the pushed
  document is not early;
- a sampler polls random sessions (`session.poll`, what GET does) `--polls-per-s` times a
  second and checks each answer against the document the trace has at the position computed
  independently: offset + (time - seek time) * speed, split into loop rounds, incarnations
  growing by (last - first) each round. A time bracket around each call gives the earliest and
  latest position: an answer newer than the latest is early (must be 0), one older than the
  earliest is stale.

Prints RSS (VmRSS of /proc/self/status) before creating the sessions, after, and at the end,
the process's CPU use during the run, the number of transitions pushed, lateness p50/p99/max,
the sampled polls and how many were early or stale, then the verdict against the goals
(RSS <= 200 MB, p99 lateness <= 1 ms, early == 0).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import os
import random
import resource
import statistics
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from replay.clock import SystemClock
from replay.core.timeline import Trace
from replay.playback.anchor import Start
from replay.playback.registry import SessionRegistry
from replay.playback.session import Session, SessionOptions
from replay.playback.ticker import Pushed

ROOT = Path(__file__).resolve().parent.parent
VERSION = "2020-07-01"


def rss_mb() -> float:
    """Resident set size of this process, MB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Model:
    """Where a session should be, computed from the trace alone."""

    trace: Trace
    offset_s: float
    """Trace position the session was seeked to."""
    anchored_lo: float
    anchored_hi: float
    """Monotonic bracket around the seek (the session's anchor lies in between)."""
    speed: float
    loop: bool

    def incarnation(self, pos: float) -> int:
        """DocumentIncarnation the replay shows at a position (trace seconds, across rounds)."""
        snaps, duration = self.trace.snapshots, self.trace.duration_s
        if self.loop:
            rnd = int(pos // duration)
            off = pos - rnd * duration
        else:
            rnd, off = 0, min(pos, duration)
        index = max(bisect.bisect_right(self.trace.offsets, off) - 1, 0)
        return snaps[index].incarnation + rnd * (snaps[-1].incarnation - snaps[0].incarnation)

    def bracket(self, t_lo: float, t_hi: float) -> tuple[int, int]:
        """Oldest and newest incarnation allowed for an answer given between t_lo and t_hi."""
        pos_lo = self.offset_s + (t_lo - self.anchored_hi) * self.speed
        pos_hi = self.offset_s + (t_hi - self.anchored_lo) * self.speed
        return self.incarnation(pos_lo), self.incarnation(pos_hi)


def incarnation_of(body: bytes) -> int:
    """DocumentIncarnation of a rendered document (it always comes first)."""
    head = body[: body.index(b",")]
    return int(head.rsplit(b":", 1)[1])


class Stats:
    def __init__(self) -> None:
        self.measuring = False
        """Lateness counts from the start of the run: creating 10,000 sessions blocks the loop."""
        self.setup_pushes = 0
        self.lateness_s = array("d")
        self.floor_s = array("d")
        self.push_session = array("l")
        self.push_at = array("d")
        self.push_incarnation = array("q")
        self.gc_pauses_s: list[float] = []
        self._gc_started = 0.0
        self.pushed_early = 0
        self.polls = 0
        self.early = 0
        self.stale = 0
        self.examples: list[str] = []

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """Time the full (generation 2) collections: they stop the event loop."""
        if info["generation"] != 2:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self.measuring:
            self.gc_pauses_s.append(time.perf_counter() - self._gc_started)


def subscriber(stats: Stats, index: int, clock: SystemClock) -> Callable[[Pushed], None]:
    """Record each push; whether it was early is checked after the run, off the event loop."""

    def on_push(pushed: Pushed) -> None:
        if stats.measuring:
            stats.lateness_s.append(pushed.lateness_s)
            # Flat arrays, no objects kept: a growing heap would trigger full collections.
            stats.push_session.append(index)
            stats.push_at.append(clock.now())
            stats.push_incarnation.append(incarnation_of(pushed.body))
        else:
            stats.setup_pushes += 1

    return on_push


async def sampler(
    sessions: list[tuple[Session, Model]],
    stats: Stats,
    clock: SystemClock,
    per_s: int,
    rng: random.Random,
) -> None:
    """Poll random sessions, a few every millisecond, and check each answer."""
    per_tick = max(1, per_s // 1000)
    while True:
        for _ in range(per_tick):
            session, model = sessions[rng.randrange(len(sessions))]
            t_lo = clock.now()
            served = session.poll(VERSION)
            t_hi = clock.now()
            oldest, newest = model.bracket(t_lo, t_hi)
            stats.polls += 1
            if served.incarnation > newest:
                stats.early += 1
                if len(stats.examples) < 5:
                    stats.examples.append(
                        f"{session.name}: served {served.incarnation}, newest allowed {newest}"
                    )
            elif served.incarnation < oldest:
                stats.stale += 1
        await clock.sleep(0.001)


async def floor_probe(stats: Stats, clock: SystemClock, rng: random.Random) -> None:
    """The event loop's own timer lateness: sleep_until random instants, as a ticker does."""
    while True:
        deadline = clock.now() + rng.uniform(0.0005, 0.02)
        await clock.sleep_until(deadline)
        stats.floor_s.append(clock.now() - deadline)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args: argparse.Namespace) -> None:
    clock = SystemClock()
    rng = random.Random(args.seed)
    registry = SessionRegistry(ROOT / "traces", clock, max_sessions=args.sessions + 1)
    traces = [registry.trace(name) for name in registry.trace_names()]
    gc.collect()
    rss_before = rss_mb()
    print(f"{len(traces)} traces: {', '.join(t.name for t in traces)}")
    print(f"RSS before sessions: {rss_before:7.1f} MB")

    stats = Stats()
    gc.callbacks.append(stats.on_gc)
    sessions: list[tuple[Session, Model]] = []
    created_at = clock.now()
    for i in range(args.sessions):
        trace = traces[i % len(traces)]
        options = SessionOptions(speed=args.speed, loop=not args.no_loop, start=Start.now)
        offset = rng.uniform(0, trace.duration_s) if not args.no_stagger else 0.0
        anchored_lo = clock.now()
        session = registry.create(f"s{i:05d}", trace, options)
        if offset:
            session.seek(offset)
        anchored_hi = clock.now()
        model = Model(trace, offset, anchored_lo, anchored_hi, args.speed, not args.no_loop)
        session.subscribers.add(subscriber(stats, i, clock))
        sessions.append((session, model))
        if i % 500 == 499:
            await asyncio.sleep(0)  # let the new tickers start as sessions keep coming
    create_s = clock.now() - created_at
    gc.collect()
    if args.gc_freeze:
        gc.freeze()  # what a server could do after creating sessions in bulk
    rss_created = rss_mb()
    print(
        f"RSS after creating {args.sessions} sessions ({create_s:.2f} s): {rss_created:7.1f} MB "
        f"(+{(rss_created - rss_before) * 1024 / args.sessions:.1f} KB per session)"
    )

    tasks = [
        asyncio.create_task(sampler(sessions, stats, clock, args.polls_per_s, rng)),
        asyncio.create_task(floor_probe(stats, clock, rng)),
    ]
    await clock.sleep(args.settle_s)  # tickers delayed by the creation burst and gc catch up
    stats.measuring = True
    gc0, tracked0 = gc.get_stats(), len(gc.get_objects())
    cpu0, switches0, started = cpu_s(), preempted(), clock.now()
    load0 = os.getloadavg()[0]
    for elapsed in range(10, int(args.run_s) + 1, 10):
        await clock.sleep_until(started + elapsed)
        print(
            f"  t={elapsed:3d} s  transitions {len(stats.lateness_s):7d}  polls {stats.polls:6d}  "
            f"RSS {rss_mb():6.1f} MB",
            flush=True,
        )
    await clock.sleep_until(started + args.run_s)
    wall = clock.now() - started
    gc1, tracked1 = gc.get_stats(), len(gc.get_objects())
    cpu, switches = cpu_s() - cpu0, preempted() - switches0
    for task in tasks:
        task.cancel()
    registry.stop_all()
    rss_end = rss_mb()

    pushes = zip(stats.push_session, stats.push_at, stats.push_incarnation, strict=True)
    for index, at, incarnation in pushes:
        _, newest = sessions[index][1].bracket(at, at)
        if incarnation > newest:
            stats.pushed_early += 1
    late = sorted(stats.lateness_s)
    print(f"RSS at the end: {rss_end:7.1f} MB (peak VmHWM {peak_mb():.1f} MB)")
    print(
        f"run {wall:.1f} s of wall time, CPU {cpu:.1f} s ({cpu / wall:.0%} of one core, "
        f"{cpu / max(len(stats.lateness_s), 1) * 1e6:.0f} us per transition pushed); "
        f"preempted {switches} times; load average {load0:.2f} -> {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(
        f"transitions pushed: {len(late)} ({len(late) / wall:,.0f}/s; "
        f"{stats.setup_pushes} more while creating and settling, not counted)"
    )
    if late:
        print(
            f"lateness: p50 {pct(late, 0.5) * 1e3:.3f} ms  p90 {pct(late, 0.9) * 1e3:.3f} ms  "
            f"p99 {pct(late, 0.99) * 1e3:.3f} ms  p99.9 {pct(late, 0.999) * 1e3:.3f} ms  "
            f"max {late[-1] * 1e3:.3f} ms  mean {statistics.fmean(late) * 1e3:.3f} ms"
        )
        print(f"lateness <= 1 ms: {bisect.bisect_right(late, 0.001) / len(late):.2%} of pushes")
    floor = sorted(stats.floor_s)
    if floor:
        print(
            f"loop floor (a bare sleep_until, {len(floor)} samples): p50 "
            f"{pct(floor, 0.5) * 1e3:.3f} ms  p99 {pct(floor, 0.99) * 1e3:.3f} ms  "
            f"max {floor[-1] * 1e3:.3f} ms"
        )
    pauses = sorted(stats.gc_pauses_s)
    print(
        f"full garbage collections during the run: {len(pauses)}"
        + (f", longest {pauses[-1] * 1e3:.0f} ms, total {sum(pauses):.2f} s" if pauses else "")
    )
    runs = [
        after["collections"] - before["collections"] for before, after in zip(gc0, gc1, strict=True)
    ]
    print(
        f"collections by generation during the run: {runs}; objects the collector tracks: "
        f"{tracked0:,} -> {tracked1:,} ({(tracked1 - tracked0) / max(len(late), 1):+.2f} per push)"
    )
    print(
        f"polls checked: {stats.polls}  early: {stats.early}  stale: {stats.stale}  "
        f"pushed early: {stats.pushed_early}"
    )
    for example in stats.examples:
        print(f"  early: {example}")
    p99 = pct(late, 0.99) if late else float("nan")
    checks = [
        ("RSS <= 200 MB", max(rss_created, rss_end) <= 200),
        ("lateness p99 <= 1 ms", p99 <= 0.001),
        ("no document early", stats.early == 0 and stats.pushed_early == 0),
    ]
    print("goals: " + "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks))


def preempted() -> int:
    """Involuntary context switches so far: other processes took the CPU from this one."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--run-s", type=float, default=60.0, help="wall seconds to run")
    parser.add_argument("--polls-per-s", type=int, default=1000)
    parser.add_argument("--settle-s", type=float, default=2.0, help="wall seconds before measuring")
    parser.add_argument("--no-loop", action="store_true", help="sessions end instead of looping")
    parser.add_argument("--no-stagger", action="store_true", help="all sessions start at 0")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() once the sessions exist"
    )
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
