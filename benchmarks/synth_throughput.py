"""`imds-replay synth` throughput: 100,000 traces of one scenario into a temporary dataset.

Usage: .venv/bin/python benchmarks/synth_throughput.py [--count N] [--scenario S] [--events K]

Runs the library path the CLI runs (plan, generate, validate, write bundles of 5,000 traces,
atomic and fsynced), prints wall time and traces/s, then reads the footers back (the `traces`
listing) and times that too. Target: 100,000 traces in under 60 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from replay.store import scan
from replay.synth import SynthOptions, plan, write_synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--scenario", default="live-migration")
    parser.add_argument("--events", type=int, default=1, help="events per episode")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="imds-synth-bench-"))
    load = os.getloadavg()[0]  # other work on the machine slows the wall time, not the CPU time
    try:
        options = SynthOptions(
            scenario=args.scenario,
            count=args.count,
            seed=args.seed,
            notice=None,
            events_per_episode=args.events,
        )
        start, cpu = time.perf_counter(), time.process_time()
        result = write_synth(plan(options), tmp)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        size = sum(p.stat().st_size for p in result.paths)
        print(
            f"synth: {result.traces:,} {args.scenario} traces ({args.events} event(s) each) "
            f"in {len(result.paths)} files, {size / 2**20:.1f} MiB, {os.cpu_count()} CPUs"
        )
        print(
            f"wall {seconds:.2f} s (CPU {cpu:.2f} s; load average before "
            f"{load:.1f}), {result.traces / seconds:,.0f} traces/s "
            f"(target: {args.count:,} in < 60 s: {'met' if seconds < 60 else 'MISSED'})"
        )
        start = time.perf_counter()
        good, bad = scan(tmp, validate_all=False)
        print(
            f"listing (footers only): {len(good):,} traces in {time.perf_counter() - start:.2f} s"
        )
        assert len(good) == args.count and not bad
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
