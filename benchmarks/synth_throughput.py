"""`imds-replay synth` throughput: 100,000 traces of one scenario into a temporary dataset.

Usage: .venv/bin/python benchmarks/synth_throughput.py [--count N] [--scenario S] [--events K]
       [--jobs 1,0]

Runs the library path the CLI runs (plan, generate, validate, write bundles of 5,000 traces,
atomic and fsynced) once per --jobs value (default: one process, then one per CPU), prints
wall and CPU time and traces/s, checks the files are byte-identical whatever the job count,
and reads the footers back (the `traces` listing). Target: 100,000 traces in under 60 s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from replay.recording.synth import SynthOptions, plan
from replay.recording.synth_write import write_synth
from replay.store.dataset import scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--scenario", default="live-migration")
    parser.add_argument("--events", type=int, default=1, help="events per episode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs", default="1,0", help="process counts to compare, comma-separated (0: one per CPU)"
    )
    args = parser.parse_args()
    options = SynthOptions(
        scenario=args.scenario,
        count=args.count,
        seed=args.seed,
        notice=None,
        events_per_episode=args.events,
    )
    print(
        f"synth: {args.count:,} {args.scenario} traces ({args.events} event(s) each), "
        f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    digests = {}
    for jobs in [int(j) for j in args.jobs.split(",")]:
        tmp = Path(tempfile.mkdtemp(prefix="imds-synth-bench-"))
        try:
            start, cpu = time.perf_counter(), _cpu_s()
            result = write_synth(plan(options), tmp, jobs=jobs or None)
            seconds, cpu = time.perf_counter() - start, _cpu_s() - cpu
            size = sum(p.stat().st_size for p in result.paths)
            digest = hashlib.sha256(b"".join(p.read_bytes() for p in result.paths)).hexdigest()
            digests[jobs] = digest
            print(
                f"jobs {jobs or 'all'}: wall {seconds:.2f} s (CPU {cpu:.2f} s, this process and "
                f"its workers), {result.traces / seconds:,.0f} traces/s, {len(result.paths)} "
                f"files, {size / 2**20:.1f} MiB, sha256 {digest[:12]} "
                f"(target < 60 s: {'met' if seconds < 60 else 'MISSED'})",
                flush=True,
            )
            start = time.perf_counter()
            good, bad = scan(tmp, validate_all=False)
            assert len(good) == args.count and not bad
            print(f"  listing (footers only): {time.perf_counter() - start:.2f} s", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"files identical across job counts: {len(set(digests.values())) == 1}")


def _cpu_s() -> float:
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
